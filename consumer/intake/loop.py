"""The intake loop: start what can start, poll what there is room for, triage it, queue it.

Capacity first: when `max_batches_in_flight` batches run and the lookahead waits, the regular
partitions are paused and the loop keeps polling, so heartbeats and the poll interval never lapse
during a long batch; whatever a poll returns is taken and queued, never dropped. The priority
lane (lanes.py) has room of its own: a busy worker keeps taking priority requests, which start
before the regular ones waiting as soon as a slot frees.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord

from consumer.generation.inflight import BatchRun
from consumer.generation.scheduler import Scheduler
from consumer.intake.config import PollingConfig
from consumer.intake.lanes import Lanes
from consumer.intake.polling import Poller
from consumer.ops.metrics import WorkerMetrics
from consumer.output.publishing import BrokerGaveUp, Unpublishable
from consumer.requests.triage import Triage, Work

log = logging.getLogger(__name__)


class Intake:
    def __init__(
        self,
        scheduler: Scheduler,
        lanes: Lanes,
        triage: Triage,
        run: Callable[[list[Work]], BatchRun],
        stopping: asyncio.Event,
        step: Callable[[], None],
        fail: Callable[[str], None],
    ) -> None:
        """`run(batch)` runs one batch; `stopping` ends the loop; `step()` tells the watchdog
        the loop moves; `fail(reason)` gives up on the worker."""
        self._scheduler = scheduler
        self._lanes = lanes
        self._triage = triage
        self._run = run
        self._stopping = stopping
        self._step = step
        self._fail = fail

    async def run(
        self,
        consumer: AIOKafkaConsumer,
        polling: PollingConfig,
        metrics: WorkerMetrics,
        exit_when_idle: float | None = None,
    ) -> None:
        """Until `stopping`, or (`exit_when_idle`) that many seconds without records or work."""
        poller = Poller(consumer, polling, metrics, self._lanes)
        scheduler, images = self._scheduler, polling.max_batch_size
        in_flight = scheduler.in_flight
        idle_since = time.monotonic()
        while not self._stopping.is_set():
            self._step()
            in_flight.slot_freed.clear()  # before counting: a slot freed from now wakes us
            scheduler.start_ready(self._run)
            gate(consumer, self._lanes, scheduler)
            if scheduler.room() <= 0:  # busy: regular partitions paused, priority ones polled
                urgent = scheduler.urgent_room() * images
                await self.take(await poller.while_busy(in_flight.slot_freed, urgent))
                continue
            records = await poller.fetch(scheduler.room() * images)
            if records or in_flight:
                idle_since = time.monotonic()
            elif exit_when_idle is not None and time.monotonic() - idle_since >= exit_when_idle:
                log.info("idle: stopping")
                return
            await self.take(records)

    async def take(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        """Triage what a poll returned and queue the valid requests as batches: each lane on
        its own (a batch never mixes lanes), priority first."""
        try:
            for lane in self._lanes.split(records):
                if lane:
                    batches = await self._triage(lane, until=self._stopping)
                    self._scheduler.add(batches)
        except BrokerGaveUp:
            pass  # stopping while the broker is away: left uncommitted
        except Unpublishable as exc:
            self._fail(f"the broker refuses every record: {exc}")


def gate(consumer: AIOKafkaConsumer, lanes: Lanes, scheduler: Scheduler) -> None:
    """Each lane's partitions fetch while there is room for its work, else they pause, so that
    their records wait in the broker rather than in a poll that nobody asked for."""
    lanes.gate(consumer, scheduler.room() > 0, scheduler.urgent_room() > 0)
