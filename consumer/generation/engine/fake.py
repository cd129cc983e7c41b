"""A fake engine for unit tests: same protocol, same cache, no model.

Images are solid colours derived from the seed, so seed handling is visible in the pixels.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Container, Mapping, Sequence

from PIL import Image

from consumer.generation.engine.activity import COMPILING, GENERATING, EngineActivity, PhaseMark
from consumer.generation.engine.cache import CacheBackedEngine, ModelCache
from consumer.generation.engine.compiling import CompiledShapes, call_shape
from consumer.generation.engine.jobs import GenerationJob, drawn_seed
from consumer.generation.engine.memory import guard_generation
from consumer.generation.engine.protocol import EngineError, JobOutput, StepHook
from schemas import ErrorCode


class FakePipeline:
    def __init__(self, model_id: str, nbytes: int = 0) -> None:
        self.model_id = model_id
        self.nbytes = nbytes  # what the cache's byte budget counts
        self.calls = 0


class FakeEngine(CacheBackedEngine[FakePipeline]):
    def __init__(
        self,
        capacity: int = 2,
        load_seconds: float = 0.0,
        step_seconds: float = 0.0,
        unavailable: Container[str] = frozenset(),
        hang: threading.Event | None = None,
        oom_above_images: int | None = None,
        model_retry_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        max_bytes: int = 0,
        model_bytes: Mapping[str, int] | None = None,
        compile_seconds: float = 0.0,
        unavailable_loras: Container[str] = frozenset(),
    ) -> None:
        """`unavailable`: models whose loads fail (read at each load: a set the test changes
        makes a model loadable later).
        `hang`: every generation blocks until it is set, deaf to timeout and cancel (a CUDA
        hang, a stalled decode), so the watchdog has something to catch.
        `oom_above_images`: a call with more images raises torch's real CUDA OutOfMemoryError,
        mapped to `out_of_memory` by the same code as the diffusers engine.
        `model_retry_seconds`, `clock`: failed loads remembered as MODEL_RETRY_SECONDS does; off
        by default, so that a test sees every load attempt.
        `max_bytes`, `model_bytes`: the cache's byte budget and each model's size (default 0).
        `compile_seconds`: pipelines count as compiled (TORCH_COMPILE): the first call of each
        shape spends this long compiling in its first step, as torch.compile does.
        `unavailable_loras`: adapters whose use fails with `lora_unavailable` (contract 1.2);
        the others are accepted, and change the pixels (drawn_seed) as an init image does."""
        self._unavailable_loras = unavailable_loras
        self.load_calls: list[str] = []
        self.batches: list[list[str]] = []  # request ids of each call, for batching tests
        self.evicted: list[str] = []
        self._load_seconds = load_seconds
        self._step_seconds = step_seconds
        self._unavailable = unavailable
        self._hang = hang
        self._oom_above_images = oom_above_images
        self._model_bytes = dict(model_bytes or {})
        self._compile_seconds = compile_seconds
        self._compiled_shapes = CompiledShapes()
        self.activity = EngineActivity()
        self._cache: ModelCache[FakePipeline] = ModelCache(
            self._watched(self._load),
            capacity,
            on_unload=self._unloaded,
            max_bytes=max_bytes,
            size_of=lambda pipeline: pipeline.nbytes,
            retry_seconds=model_retry_seconds,
            clock=clock,
        )

    def _unloaded(self, model_ids: list[str]) -> None:
        self.evicted.extend(model_ids)
        self._compiled_shapes.forget(model_ids)

    def _load(self, model_id: str) -> FakePipeline:
        self.load_calls.append(model_id)
        time.sleep(self._load_seconds)
        if model_id in self._unavailable:
            raise EngineError(ErrorCode.MODEL_UNAVAILABLE, f"model {model_id!r} is not available")
        return FakePipeline(model_id, self._model_bytes.get(model_id, 0))

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None = None,
        on_step: StepHook | None = None,
    ) -> list[JobOutput]:
        first, shape = jobs[0], call_shape(jobs)
        missing = [name for name, _ in first.loras if name in self._unavailable_loras]
        if missing:
            raise EngineError(ErrorCode.LORA_UNAVAILABLE, f"LoRA {missing[0]!r} is not available")
        with self._cache.use(first.model) as pipeline:
            pipeline.calls += 1
            del pipeline  # as the real engine: leaving the block may unload it
            compiles = self._compile_seconds > 0 and self._compiled_shapes.is_new(
                first.model, shape
            )
            with self.activity.phase(COMPILING if compiles else GENERATING, first.model) as phase:
                self.batches.append([job.request_id for job in jobs])
                return guard_generation(
                    lambda: self._run(jobs, timeout_seconds, cancel, on_step, phase, compiles),
                    "none",
                )

    def _run(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None,
        on_step: StepHook | None,
        phase: PhaseMark,
        compiles: bool,
    ) -> list[JobOutput]:
        """As the diffusers engine's step guard: each step reported to the watchdog, the
        timeout counted from the start, or from the end of a compiling first step."""
        started = timer = time.perf_counter()
        images = sum(job.num_images for job in jobs)
        if self._oom_above_images is not None and images > self._oom_above_images:
            raise _cuda_out_of_memory(images)
        if self._hang is not None:
            self._hang.wait()
        total = jobs[0].denoising_steps
        for step in range(total):
            time.sleep(self._step_seconds + (self._compile_seconds if compiles and not step else 0))
            if phase.step():
                self._compiled_shapes.add(jobs[0].model, call_shape(jobs))
                timer = time.perf_counter()
            if cancel is not None and cancel.is_set():
                raise EngineError(ErrorCode.GENERATION_FAILED, "generation cancelled")
            if timeout_seconds and time.perf_counter() - timer > timeout_seconds:
                raise EngineError(ErrorCode.TIMEOUT, f"generation exceeded {timeout_seconds}s")
            if on_step is not None:
                on_step(step + 1, total)
        duration = time.perf_counter() - started
        return [JobOutput(job, [_image(job, seed) for seed in job.seeds], duration) for job in jobs]

    def describe(self) -> dict[str, object]:
        return {"engine": "fake", "device": "none", **self._cache.describe()}


def _cuda_out_of_memory(images: int) -> BaseException:
    import torch  # here only: tests that never reach this path do not pay for torch

    from consumer.ops.logs import route_library_logs

    route_library_logs()  # as after every lazy import of torch: its console handler goes
    return torch.cuda.OutOfMemoryError(
        f"CUDA out of memory (fake engine: {images} images in one call)"
    )


def _image(job: GenerationJob, seed: int) -> Image.Image:
    seed = drawn_seed(job, seed)
    colour = (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256)
    return Image.new("RGB", (job.width, job.height), colour)
