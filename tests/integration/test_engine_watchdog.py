"""The real diffusers engine, on the tiny model, as the watchdog sees it: denoising steps far
slower than the generation limit, and a compiled UNet's first call per shape."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from consumer.generation.engine import EngineError, GenerationJob
from consumer.generation.engine.activity import COMPILING, GENERATING, LOADING
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.generation.engine.loading import PipelineLoader
from consumer.ops.watchdog import WatchdogLimits, engine_overdue
from consumer.settings import Settings
from schemas import ErrorCode

pytestmark = pytest.mark.integration


def job(size: int = 64, steps: int = 1) -> GenerationJob:
    return GenerationJob(
        "r1", "a red fox", "blurry", "standard", "tiny-sdxl", size, size, steps, 0.0, (1,)
    )


@dataclass
class Watch:
    """What a watchdog polling every 20 ms saw of the engine's phases."""

    phases: list[str] = field(default_factory=list)  # each phase name seen, in order, once
    verdicts: list[str] = field(default_factory=list)


@contextmanager
def watching(engine: DiffusersEngine, limits: WatchdogLimits) -> Iterator[Watch]:
    seen = Watch()
    done = threading.Event()

    def poll() -> None:
        while not done.wait(0.02):
            snapshot = engine.activity.snapshot()
            for phase in snapshot:
                if not seen.phases or seen.phases[-1] != phase.name:
                    seen.phases.append(phase.name)
            verdict = engine_overdue(snapshot, time.monotonic(), limits)
            if verdict is not None:
                seen.verdicts.append(verdict)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        done.set()
        thread.join()


def test_steps_slower_than_the_grace_end_in_timeout_not_in_a_hang(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GENERATION_TIMEOUT_SECONDS=3.8, ENGINE_GRACE_SECONDS=0.9, and CPU steps of 3 s: the call
    reaches its second step boundary at ~6 s, past the timeout, and ends with `timeout`. The
    watchdog's limit (4.7 s) counts from the last step, so it never calls the call hung (counted
    from the call's start, it did at 4.7 s, and the worker exited 70)."""
    real_prepare = PipelineLoader._prepare

    def slow_steps(self: PipelineLoader, pipeline: Any) -> Any:
        pipeline = real_prepare(self, pipeline)
        pipeline.unet.register_forward_pre_hook(lambda module, args: time.sleep(3.0))
        return pipeline

    monkeypatch.setattr(PipelineLoader, "_prepare", slow_steps)
    engine = DiffusersEngine(engine_settings.engine_config())
    steps: list[int] = []
    limits = WatchdogLimits(load_seconds=600, generation_seconds=4.7, poll_age_seconds=60)
    with watching(engine, limits) as watch, pytest.raises(EngineError) as info:
        engine.generate([job(steps=6)], 3.8, on_step=lambda done, total: steps.append(done))
    assert info.value.code is ErrorCode.TIMEOUT, info.value.message
    assert watch.verdicts == [], (info.value.message, steps)
    assert [name for name in watch.phases if name != LOADING] == [GENERATING], watch.phases
    # Stopped at the second boundary (at the first, if a busy machine made it late).
    assert steps in ([1], []), info.value.message


def _slow_backend(graph: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
    time.sleep(3.0)  # a compiler slower than the limits below, whatever dynamo's own time
    return graph.forward


def test_a_compiled_unet_compiles_as_a_load_once_per_shape(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TORCH_COMPILE: the first call of each shape compiles inside its first step, for seconds
    here, minutes with max-autotune. It is `compiling` to the watchdog (the load limit) until
    that step ends, and its timeout counts from there: a generation limit shorter than the
    compilation neither fails the call with `timeout` nor calls the engine hung."""
    real_prepare = PipelineLoader._prepare

    def compiled(self: PipelineLoader, pipeline: Any) -> Any:
        pipeline = real_prepare(self, pipeline)
        pipeline.unet = torch.compile(pipeline.unet, backend=_slow_backend)
        return pipeline

    monkeypatch.setattr(PipelineLoader, "_prepare", compiled)
    engine = DiffusersEngine(engine_settings.engine_config())
    entered: list[str] = []  # the phases each call entered
    real_phase = engine.activity.phase

    def recording(name: str, model: str) -> Any:
        entered.append(name)
        return real_phase(name, model)

    monkeypatch.setattr(engine.activity, "phase", recording)
    limits = WatchdogLimits(load_seconds=600, generation_seconds=2.5, poll_age_seconds=60)
    at_steps: list[str] = []  # the phase at each step boundary

    def step(done: int, total: int) -> None:
        at_steps.append(engine.activity.snapshot()[-1].name)

    for size, compiles in [(64, True), (64, False), (128, True)]:
        entered.clear()
        at_steps.clear()

        with watching(engine, limits) as watch:
            started = time.monotonic()
            (output,) = engine.generate([job(size, steps=2)], 2.0, on_step=step)
        assert output.images[0].size == (size, size)
        assert watch.verdicts == []
        assert at_steps == [GENERATING, GENERATING]
        if compiles:
            assert time.monotonic() - started > 3.0  # it did compile, slower than the limits
            assert entered[-1] == COMPILING and COMPILING in watch.phases
        else:
            assert entered == [GENERATING]
