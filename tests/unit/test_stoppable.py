"""consumer/stoppable.py: bounded waits, work that a stop cuts short, and the one backoff."""

from __future__ import annotations

import asyncio

import pytest

from consumer.stoppable import Backoff, StopRequested, bounded, event_within, unless_set


async def test_event_within_says_whether_the_event_came_in_time() -> None:
    event = asyncio.Event()
    assert not await event_within(event, 0.01)
    asyncio.get_running_loop().call_later(0.01, event.set)
    assert await event_within(event, 5)


async def test_unless_set_finishes_the_work_or_cancels_it_at_the_event() -> None:
    stop = asyncio.Event()
    assert await unless_set(asyncio.sleep(0), stop)

    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert not await unless_set(forever(), stop)
    assert await event_within(cancelled, 5)


async def test_unless_set_raises_what_the_work_raised() -> None:
    async def broken() -> None:
        raise ValueError("the join failed")

    with pytest.raises(ValueError, match="the join failed"):
        await unless_set(broken(), asyncio.Event())


async def test_backoff_doubles_up_to_its_cap_and_ends_on_stop() -> None:
    backoff = Backoff(0.01, 0.03)
    delays = []
    for _ in range(4):
        delays.append(backoff.delay)
        await backoff.wait(asyncio.Event())
    assert delays == [0.01, 0.02, 0.03, 0.03]
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(StopRequested):
        await backoff.wait(stop)


async def test_bounded_ends_a_call_that_never_answers_and_gives_a_last_chance_on_stop() -> None:
    async def never() -> None:
        await asyncio.Event().wait()

    async def soon() -> str:
        await asyncio.sleep(0.05)
        return "done"

    with pytest.raises(TimeoutError):
        await bounded(never(), None, 0.05)
    stop = asyncio.Event()
    stop.set()
    assert await bounded(soon(), stop, 10.0, last_seconds=1.0) == "done"
    with pytest.raises(TimeoutError):
        await bounded(never(), stop, 10.0, last_seconds=0.05)
