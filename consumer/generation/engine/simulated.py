"""The simulated engine (ENGINE=simulated): the real engine's timing and bookkeeping, no model.

For load tests and capacity planning, as vLLM's dummy weights are: real worker processes on a
pool's real broker and store, without a GPU, without torch (nothing here imports it).

- Time: each call takes SIMULATED_STEP_MS per denoising step for its whole batch, however many
  images it holds, spent in `time.sleep` (off the GIL, as a GPU's work is). Step k of a call ends
  k x SIMULATED_STEP_MS after the call started: the images are drawn within the first step, and
  whatever the step hook costs is absorbed by the steps, so the engine's rate is MAX_BATCH_SIZE
  images per (steps x SIMULATED_STEP_MS) whenever drawing is quicker than the steps.
- Stops: after each step, as the diffusers engine's `_step_guard` does and in its order: the
  cancel event (the worker abandons the batch: generation_failed), the timeout (timeout), then
  `on_step`, which may raise RequestsStopped. Nothing interrupts a step.
- Models: every model id is accepted and none is loaded; a "load" takes SIMULATED_LOAD_MS, through
  the same ModelCache (LRU, MAX_MODELS_CACHE, stats) and the same `loading` and `generating`
  phases, so the watchdog, /health, /v1/models and the metrics see loads and generations.
- Images: drawn from each seed (mixed with the init image's digest, the strength and the LoRA
  adapters when a request has them, contract 1.2) at the requested size, the same bytes for the
  same seed and size, cheap (a few ms for 1024x1024): a colour gradient with fine noise, which
  PNG compresses to about what it makes of a photograph (some 60 % of the raw pixels), so
  encoding and uploads cost about what real images cost. Each output's note (audit.note) says
  the images are synthetic.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from consumer.generation.engine.activity import GENERATING, EngineActivity
from consumer.generation.engine.cache import CacheBackedEngine, ModelCache
from consumer.generation.engine.catalog import SIMULATED_NOTE
from consumer.generation.engine.config import EngineConfig
from consumer.generation.engine.jobs import GenerationJob, drawn_seed
from consumer.generation.engine.protocol import (
    EngineError,
    JobOutput,
    StepHook,
    one_batch,
    split_outputs,
)
from consumer.generation.engine.steps import stop_reason

log = logging.getLogger(__name__)

# Fine noise of 0..15 on a gradient: PNG makes ~57 % of the raw size of it (a photograph's ~50 %).
_NOISE_MASK = np.uint8(0x0F)
# Each of the two ramps (across, down) spans at most this much, so pixels never exceed 255.
_RAMP_MAX = (255 - int(_NOISE_MASK)) // 2


@dataclass(frozen=True)
class SimulatedModel:
    """What the cache holds for a model: its name, nothing else (0 bytes to the byte budget)."""

    model_id: str


class SimulatedEngine(CacheBackedEngine[SimulatedModel]):
    def __init__(self, config: EngineConfig) -> None:
        self._step_seconds = config.simulated_step_ms / 1000
        self._load_seconds = config.simulated_load_ms / 1000
        self.activity = EngineActivity()
        self._cache: ModelCache[SimulatedModel] = ModelCache(
            self._watched(self._load),
            config.max_models,
            max_bytes=config.max_cache_bytes,
            retry_seconds=config.model_retry_seconds,
        )
        log.warning(
            "simulated engine: no model runs, every image is synthetic (load tests only)",
            extra={
                "simulated_step_ms": config.simulated_step_ms,
                "simulated_load_ms": config.simulated_load_ms,
            },
        )

    def _load(self, model_id: str) -> SimulatedModel:
        time.sleep(self._load_seconds)
        return SimulatedModel(model_id)

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None = None,
        on_step: StepHook | None = None,
    ) -> list[JobOutput]:
        first = one_batch(jobs)
        with (
            self._cache.use(first.model) as model,
            self.activity.phase(GENERATING, first.model) as phase,
        ):
            del model  # as the real engine: leaving the block may unload it
            started = time.perf_counter()
            images = [
                draw(drawn_seed(job, seed), job.width, job.height)
                for job in jobs
                for seed in job.seeds
            ]
            total = first.denoising_steps  # image-to-image (1.2): int(steps x strength)
            for step in range(total):
                _sleep_until(started + (step + 1) * self._step_seconds)
                phase.step()  # the watchdog's generation limit counts from the last step
                _after_step(started, timeout_seconds, cancel, on_step, step, total)
            duration = time.perf_counter() - started
        return split_outputs(jobs, images, duration, SIMULATED_NOTE)

    def describe(self) -> dict[str, object]:
        return {
            "engine": "simulated",
            "device": "none",
            "step_ms": self._step_seconds * 1000,
            "load_ms": self._load_seconds * 1000,
            "note": SIMULATED_NOTE,
            **self._cache.describe(),
        }


def _sleep_until(deadline: float) -> None:
    """time.sleep (the GIL released) until perf_counter() reaches `deadline`: never earlier."""
    while (left := deadline - time.perf_counter()) > 0:
        time.sleep(left)


def _after_step(
    started: float,
    timeout_seconds: float,
    cancel: threading.Event | None,
    on_step: StepHook | None,
    step: int,
    total: int,
) -> None:
    """At the end of step `step` (0-based): what the diffusers engine's `_step_guard` does there,
    in the same order and with the same errors (steps.stop_reason, shared)."""
    stop = stop_reason(started, timeout_seconds, cancel, step)
    if stop is not None:
        raise EngineError(*stop)
    if on_step is not None:
        on_step(step + 1, total)


def draw(seed: int, width: int, height: int) -> Image.Image:
    """The synthetic image of `seed` at width x height (RGB): the same pixels for the same seed
    and size, other pixels for another seed. A gradient between colours drawn from the seed, with
    noise of the seed's generator on top; a few ms for 1024x1024."""
    rng = np.random.default_rng(seed)
    start, end = rng.integers(0, _RAMP_MAX + 1, size=(2, 2, 3), dtype=np.uint8)
    noise = np.frombuffer(rng.bytes(width * height * 3), dtype=np.uint8)
    pixels = (noise & _NOISE_MASK).reshape(height, width, 3)
    pixels += np.linspace(start[0], end[0], width).astype(np.uint8)[np.newaxis]  # across
    pixels += np.linspace(start[1], end[1], height).astype(np.uint8)[:, np.newaxis]  # down
    return Image.fromarray(pixels)  # uint8, height x width x 3: RGB
