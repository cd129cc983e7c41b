"""The watchdog's rules on engine phases: a load or a compilation by its age, a generation by
the time since its last denoising step."""

from __future__ import annotations

from typing import Any

from consumer.generation.engine.activity import COMPILING, GENERATING, LOADING, Phase
from consumer.generation.engine.compiling import CompiledShapes, call_shape
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.engine.jobs import GenerationJob
from consumer.ops.watchdog import WatchdogLimits, engine_overdue

LIMITS = WatchdogLimits(load_seconds=900, generation_seconds=180, poll_age_seconds=120)


def test_a_generation_that_keeps_stepping_is_never_hung() -> None:
    """An hour into the call, a step ended 100 s ago: the call is slow, not hung. Its soft
    timeout ends it at the boundary (with `timeout`); the watchdog must not beat it to it."""
    stepping = Phase(GENERATING, "m", since=0.0, last_step=3500.0)
    assert engine_overdue([stepping], 3600.0, LIMITS) is None


def test_a_step_longer_than_the_limit_is_hung() -> None:
    stuck = Phase(GENERATING, "m", since=0.0, last_step=100.0)
    reason = engine_overdue([stuck], 281.0, LIMITS)
    assert reason is not None and "generating 'm'" in reason
    assert "181s since its last denoising step" in reason
    first = Phase(GENERATING, "m", since=0.0)  # no step at all: counted from the start
    assert engine_overdue([first], 180.0, LIMITS) is None
    reason = engine_overdue([first], 181.0, LIMITS)
    assert reason is not None and "since its start" in reason


def test_a_compilation_is_judged_by_the_load_limit() -> None:
    compiling = Phase(COMPILING, "m", since=0.0)
    assert engine_overdue([compiling], 899.0, LIMITS) is None
    reason = engine_overdue([compiling], 901.0, LIMITS)
    assert reason is not None and reason.startswith("engine compiling 'm' for 901s")
    unwatched = WatchdogLimits(load_seconds=900, generation_seconds=None, poll_age_seconds=120)
    assert engine_overdue([compiling], 901.0, unwatched) is not None  # loads always are
    assert engine_overdue([Phase(GENERATING, "m", since=0.0)], 9999.0, unwatched) is None
    assert engine_overdue([Phase(LOADING, "m", since=0.0)], 901.0, unwatched) is not None


def job(size: int, images: int = 1, cfg: float = 0.0) -> GenerationJob:
    seeds = tuple(range(images))
    return GenerationJob("r", "p", "n", "standard", "m", size, size, 1, cfg, seeds)


def test_a_shape_is_new_per_size_batch_and_guidance_until_its_model_is_unloaded() -> None:
    shapes = CompiledShapes()
    shapes.add("m", call_shape([job(512)]))
    assert not shapes.is_new("m", call_shape([job(512)]))
    assert shapes.is_new("other", call_shape([job(512)]))
    for jobs in ([job(1024)], [job(512, images=2)], [job(512), job(512)], [job(512, cfg=5.0)]):
        assert shapes.is_new("m", call_shape(jobs))
    assert not shapes.is_new("m", call_shape([job(512, cfg=1.0)]))  # no guidance at cfg ≤ 1
    shapes.forget(["m"])
    assert shapes.is_new("m", call_shape([job(512)]))


def test_the_fake_engine_compiles_once_per_shape_and_again_after_an_unload() -> None:
    engine = FakeEngine(capacity=1, compile_seconds=0.3)
    entered: list[str] = []
    real_phase = engine.activity.phase

    def recording(name: str, model: str) -> Any:
        entered.append(name)
        return real_phase(name, model)

    engine.activity.phase = recording  # type: ignore[method-assign]
    for size in (64, 64, 128):
        engine.generate([job(size)], timeout_seconds=0.1)  # the compile is outside the timeout
    engine.purge()
    engine.generate([job(64)], timeout_seconds=0.1)
    assert [name for name in entered if name != LOADING] == [
        COMPILING,
        GENERATING,
        COMPILING,
        COMPILING,
    ]
