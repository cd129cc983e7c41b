"""The StopBoard: cancels remembered for a while and bounded, deadlines answered as expired."""

from __future__ import annotations

import time
from dataclasses import replace

from consumer.generation.engine import GenerationJob
from consumer.intake.control import StopBoard

JOB = GenerationJob("r1", "p", "", "standard", "m", 64, 64, 1, 0.0, (1,))


def test_a_cancel_stops_its_request_and_only_it() -> None:
    board = StopBoard(retention_seconds=60)
    board.cancel("r1")
    other = replace(JOB, request_id="r2")
    assert board.due([JOB, other]) == {"r1": "cancelled"}


def test_a_deadline_passed_is_expired_and_a_future_one_is_not() -> None:
    board = StopBoard(retention_seconds=60)
    now = time.time()
    late, early = replace(JOB, deadline=now - 1), replace(JOB, request_id="r2", deadline=now + 60)
    assert board.due([late, early], now=now) == {"r1": "deadline_exceeded"}


def test_cancels_older_than_the_retention_or_past_the_bound_are_forgotten() -> None:
    board = StopBoard(retention_seconds=60, max_entries=2)
    board.cancel("old", at=time.time() - 120)
    board.cancel("a")
    assert len(board) == 1  # "old" was past the retention
    board.cancel("b")
    board.cancel("c")
    assert len(board) == 2 and not board.due([replace(JOB, request_id="a")])


def test_a_cancel_is_checked_for_age_when_read() -> None:
    """A quiet worker (no new cancel to trigger the clean-up) must not honour a cancel for
    ever that a newer worker, reading the topic back CANCEL_RETENTION_SECONDS, would ignore."""
    board = StopBoard(retention_seconds=60)
    board.cancel("r1")
    assert board.due([JOB]) == {"r1": "cancelled"}
    assert board.due([JOB], now=time.time() + 61) == {}


def test_a_flood_of_cancels_does_not_evict_one_for_a_request_held_here() -> None:
    held = {"r1"}
    board = StopBoard(retention_seconds=60, max_entries=10, holds=held.__contains__)
    board.cancel("r1")
    for index in range(1000):
        board.cancel(f"bogus-{index}")
    assert len(board) == 10
    assert board.due([JOB]) == {"r1": "cancelled"}
