"""consumer/heap.py: the collector paused while a worker process starts, then back on."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from consumer import heap


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    assert gc.isenabled()
    yield
    heap.resume()
    gc.enable()


def test_pause_then_resume_turns_it_back_on_once() -> None:
    heap.pause()
    assert not gc.isenabled()
    heap.pause()  # twice: still one pause
    heap.resume()
    assert gc.isenabled()
    gc.disable()  # someone else's decision now: a second resume leaves it alone
    heap.resume()
    assert not gc.isenabled()


def test_resume_without_a_pause_changes_nothing() -> None:
    gc.disable()
    heap.resume()
    assert not gc.isenabled()
