"""Waits that end when the worker stops: on an event with a time limit, for work unless an event
comes first, with a bound (`bounded`), and `Backoff`, the one retry policy of every loop that
waits for a broker or a store to come back (the producer's start, publishing, uploads, the
control topic)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def event_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set, at most `seconds`; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def unless_set(awaitable: Awaitable[Any], event: asyncio.Event) -> bool:
    """Await `awaitable` unless `event` is set first (then cancel it); True if it finished.
    What it raised is raised."""
    task = asyncio.ensure_future(awaitable)
    stop = asyncio.ensure_future(event.wait())
    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not task.done():
        task.cancel()
        return False
    task.result()
    return True


class StopRequested(Exception):
    """The worker is stopping: a wait or retry loop gave up."""


class Abandoned(Exception):
    """The worker gave a batch up (shutdown or rebalance): publish nothing, commit nothing, so
    its requests are delivered again."""


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or raise StopRequested as soon as `stop` is set."""
    if await event_within(stop, seconds):
        raise StopRequested


class Backoff:
    """Capped exponential backoff: `first` seconds, doubled after each wait, at most `cap`."""

    def __init__(self, first: float, cap: float) -> None:
        self._delay = min(first, cap)
        self._cap = cap

    @property
    def delay(self) -> float:
        """What the next `wait` sleeps."""
        return self._delay

    async def wait(self, stop: asyncio.Event) -> None:
        """Sleep the current delay, then double it; raise StopRequested as soon as `stop` is
        set (a loop retrying for as long as the worker runs ends with it)."""
        await wait_or_stop(stop, self._delay)
        self._delay = min(self._delay * 2, self._cap)


async def bounded(
    call: Awaitable[T], until: asyncio.Event | None, seconds: float, last_seconds: float = 0.0
) -> T:
    """`call` awaited for at most `seconds`, and once `until` is set at most `last_seconds`
    more (a last chance while stopping): then cancelled, and TimeoutError raised. For waits on
    a peer that may retry for ever (aiokafka's commit while the coordinator is away)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(call)
    deadline = loop.time() + seconds
    if until is not None:
        stopper = asyncio.ensure_future(until.wait())
        await asyncio.wait({task, stopper}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if not task.done():
            deadline = min(deadline, loop.time() + last_seconds)
    if not task.done():
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
    if not task.done():
        task.cancel()
        raise TimeoutError("no answer in time")
    return task.result()
