"""consumer/generation/inflight.py: slots, and the drain that bounds a shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from consumer.generation import inflight
from consumer.generation.inflight import InFlight


def batch_that(seconds: float, stored_after: float = 0.0) -> inflight.BatchRun:
    async def run(stored: Callable[[], None]) -> None:
        await asyncio.sleep(stored_after)
        stored()
        await asyncio.sleep(seconds)

    return run


async def test_a_slot_is_free_once_the_batch_is_stored_and_the_flight_ends_with_it() -> None:
    flight = InFlight(1)
    flight.start([], batch_that(0.05))
    assert flight.free_slots == 0 and len(flight) == 1
    await asyncio.sleep(0.01)
    assert flight.free_slots == 1 and len(flight) == 1  # stored, still publishing
    await flight.wait(5)
    assert len(flight) == 0 and flight.slot_freed.is_set()


async def test_a_drain_waits_for_batches_that_finish_within_the_grace() -> None:
    flight, abandoned = InFlight(2), []
    flight.start([], batch_that(0.05))
    await flight.drain(5, lambda: abandoned.append(True))
    assert len(flight) == 0 and abandoned == []


async def test_a_drain_abandons_then_cancels_a_batch_that_outlives_the_grace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(inflight, "ABANDON_WAIT_SECONDS", 0.05)
    flight, abandoned = InFlight(2), []
    flight.start([], batch_that(3600))  # deaf to abandon: a hung engine call
    await flight.drain(0.05, lambda: abandoned.append(True))
    assert abandoned == [True] and len(flight) == 0
