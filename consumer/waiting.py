"""Waiting on an event with a time limit (the shape of every retry and slot wait here), or for
work unless an event comes first."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any


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
