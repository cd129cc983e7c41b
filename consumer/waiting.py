"""Waiting on an event with a time limit: the shape of every retry and slot wait here."""

from __future__ import annotations

import asyncio
import contextlib


async def event_within(event: asyncio.Event, seconds: float) -> bool:
    """Wait until `event` is set, at most `seconds`; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()
