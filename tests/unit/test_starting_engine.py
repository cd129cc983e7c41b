"""engine/starting.py: the stand-in the worker is built around while the engine is built."""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from consumer.engine import CacheStats, Engine, warmup_job
from consumer.engine.fake import FakeEngine
from consumer.engine.starting import StartingEngine


def test_before_the_build_nothing_is_loaded_and_a_generation_waits_for_it() -> None:
    building: Future[Engine] = Future()
    engine = StartingEngine(building)
    assert engine.describe() == {"engine": "starting"}
    assert (engine.loaded_models(), engine.stats) == ([], CacheStats())
    assert engine.purge("fake").as_dict() == {"model_id": "fake", "removed": [], "remaining": []}
    assert engine.activity.snapshot() is not None  # the watchdog reads it from the start

    with ThreadPoolExecutor(1) as thread:
        generating = thread.submit(engine.generate, [warmup_job("fake", 64)], 0)
        assert not generating.done()
        real = FakeEngine()
        building.set_result(real)
        [output] = generating.result(timeout=10)
    assert output.job.model == "fake" and real.load_calls == ["fake"]
    assert engine.activity is real.activity
    assert engine.loaded_models() == ["fake"] and engine.describe() == real.describe()


def test_a_build_that_failed_fails_each_generation_with_its_error() -> None:
    building: Future[Engine] = Future()
    building.set_exception(RuntimeError("no such device"))
    engine = StartingEngine(building)
    with pytest.raises(RuntimeError, match="no such device"):
        engine.generate([warmup_job("fake", 64)], 0, threading.Event())
    assert engine.describe() == {"engine": "starting"}
