"""engine/starting.py: the stand-in the worker is built around while the engine is built."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from consumer.generation.engine import CacheStats, Engine, warmup_job
from consumer.generation.engine.activity import LOADING
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.engine.starting import BUILDING, StartingEngine
from consumer.ops.watchdog import WatchdogLimits, engine_overdue


@pytest.fixture
def thread() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(1) as executor:
        yield executor


def test_before_the_build_nothing_is_loaded_and_a_generation_waits_for_it(
    thread: ThreadPoolExecutor,
) -> None:
    release, real = threading.Event(), FakeEngine()

    def build() -> Engine:
        release.wait(10)
        return real

    engine = StartingEngine(build, thread)
    assert engine.describe() == {"engine": "starting"}
    assert (engine.loaded_models(), engine.stats) == ([], CacheStats())
    assert engine.purge("fake").as_dict() == {"model_id": "fake", "removed": [], "remaining": []}
    generating = thread.submit(engine.generate, [warmup_job("fake", 64)], 0)  # queued behind
    release.set()
    [output] = generating.result(timeout=10)
    assert output.job.model == "fake" and real.load_calls == ["fake"]
    assert engine.activity is real.activity
    assert engine.loaded_models() == ["fake"] and engine.describe() == real.describe()


def test_a_build_that_hangs_is_a_load_to_the_watchdog(thread: ThreadPoolExecutor) -> None:
    """A build that never returns (a CUDA driver that never answers) must not hide: it is a
    loading phase, and past MODEL_LOAD_TIMEOUT_SECONDS the worker turns unhealthy."""
    release, started = threading.Event(), threading.Event()

    def build() -> Engine:
        started.set()
        release.wait(10)
        return FakeEngine()

    engine = StartingEngine(build, thread)
    try:
        assert started.wait(10)
        [phase] = phases = engine.activity.snapshot()
        assert (phase.name, phase.model) == (LOADING, BUILDING)
        limits = WatchdogLimits(load_seconds=5.0, generation_seconds=None, poll_age_seconds=60)
        reason = engine_overdue(phases, phase.since + 6.0, limits)
        assert reason is not None and "loading 'the engine'" in reason
    finally:
        release.set()
    engine.building.result(timeout=10)
    assert engine.activity.snapshot() == []


def test_a_build_that_failed_fails_each_generation_with_its_error(
    thread: ThreadPoolExecutor,
) -> None:
    def build() -> Engine:
        raise RuntimeError("no such device")

    engine = StartingEngine(build, thread)
    with pytest.raises(RuntimeError, match="no such device"):
        engine.generate([warmup_job("fake", 64)], 0, threading.Event())
    assert engine.describe() == {"engine": "starting"}
    assert engine.activity.snapshot() == []
