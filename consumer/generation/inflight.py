"""Batches in flight: the tasks that run them, the MAX_BATCHES_IN_FLIGHT slots, and waiting.

A batch holds a slot while it generates and while its images are stored: the slot bounds the
generated images waiting for upload. It stays in flight until its results are published and its
attempts forgotten: shutdown and a rebalance wait for batches in flight, and a suspect batch
(attempts.py) starts only when nothing is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from functools import partial
from typing import Any

from aiokafka import TopicPartition

from consumer.requests.triage import Work

log = logging.getLogger(__name__)

ABANDON_WAIT_SECONDS = 3.0  # after abandoning: the engine stops at its next denoising step
# Runs one batch; calls its argument once the batch's images are stored (batches.BatchRunner.run).
BatchRun = Callable[[Callable[[], None]], Coroutine[Any, Any, None]]


class InFlight:
    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.tasks: dict[asyncio.Task[None], list[Work]] = {}
        self._held: set[object] = set()  # one token per batch holding a slot
        self.slot_freed = asyncio.Event()

    def __len__(self) -> int:
        return len(self.tasks)

    @property
    def free_slots(self) -> int:
        return self.slots - len(self._held)

    @property
    def exclusive(self) -> bool:
        """A suspect batch is in flight: nothing may start beside it."""
        return any(work.exclusive for batch in self.tasks.values() for work in batch)

    def start(self, batch: list[Work], run: BatchRun) -> None:
        slot = object()
        self._held.add(slot)
        task = asyncio.create_task(run(partial(self._free, slot)))
        self.tasks[task] = batch
        task.add_done_callback(partial(self._done, slot))

    def touching(self, partitions: set[TopicPartition]) -> list[asyncio.Task[None]]:
        return [task for task, batch in self.tasks.items() if any(w.on(partitions) for w in batch)]

    async def wait(self, timeout: float, tasks: Iterable[asyncio.Task[None]] | None = None) -> None:
        """Until `tasks` (default: all in flight) are done, or `timeout` seconds."""
        waiting = list(self.tasks if tasks is None else tasks)
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def drain(self, grace: float, abandon: Callable[[], None]) -> None:
        """Let the batches in flight finish within `grace` seconds; then `abandon` them (the
        engine stops at its next step, retries give up); a batch still running after that (a
        hung engine call) is cancelled, its requests left uncommitted for redelivery."""
        await self.wait(grace)
        if not self.tasks:
            return
        log.warning("drain timeout: abandoning %d batch(es)", len(self.tasks))
        abandon()
        await self.wait(ABANDON_WAIT_SECONDS)
        self.cancel()
        await self.wait(1.0)

    def _free(self, slot: object) -> None:
        if slot in self._held:
            self._held.discard(slot)
            self.slot_freed.set()

    def _done(self, slot: object, task: asyncio.Task[None]) -> None:
        self.tasks.pop(task, None)
        self._free(slot)
        # Even when its slot was free already: a batch leaving the flight may let a suspect
        # batch start, which waits for nothing in flight.
        self.slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task failed", exc_info=task.exception())
