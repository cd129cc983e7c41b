"""consumer/waiting.py: bounded waits on an event, and work that a stop cuts short."""

from __future__ import annotations

import asyncio

import pytest

from consumer.waiting import event_within, unless_set


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
