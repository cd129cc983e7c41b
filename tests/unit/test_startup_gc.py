"""consumer/ops/startup_gc.py: the collector paused while a worker process starts, then back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer.ops import startup_gc


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    startup_gc.resume()
    gc.enable()


def test_pause_then_resume_turns_it_back_on_once() -> None:
    startup_gc.pause()
    assert not gc.isenabled()
    startup_gc.pause()  # twice: still one pause
    startup_gc.resume()
    assert gc.isenabled()
    gc.disable()  # someone else's decision now: a second resume leaves it alone
    startup_gc.resume()
    assert not gc.isenabled()


def test_resume_without_a_pause_changes_nothing() -> None:
    gc.disable()
    startup_gc.resume()
    assert not gc.isenabled()
