"""Polling the consumer: a fetch that lets a batch fill, and a keep-alive poll while paused.

Both hand back whatever the poll returned, for the worker to take: a record returned by a poll is
never dropped (aiokafka has moved its fetch position past it).

With a priority lane (lanes.py), its partitions are polled first, on their own: a poll that
returns both lanes cannot fill its `max_records` with regular records while priority ones wait in
aiokafka's buffer; and a busy worker, its regular partitions paused, polls them alone (records
buffered for the paused partitions are then kept, not thrown away and fetched again).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.intake.config import PollingConfig
from consumer.intake.lanes import Lanes
from consumer.ops.metrics import WorkerMetrics
from consumer.stoppable import event_within

Records = list[ConsumerRecord[Any, Any]]

BUSY_WAIT_SECONDS = 1.0  # a busy worker looks at its state at least this often


class Poller:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        config: PollingConfig,
        metrics: WorkerMetrics,
        lanes: Lanes | None = None,
    ) -> None:
        self._consumer = consumer
        self._config = config
        self._metrics = metrics
        self._lanes = lanes or Lanes("")
        self._last_poll = time.monotonic()

    async def fetch(self, limit: int) -> Records:
        """Whatever is waiting, up to `limit` (a poll returns as soon as records arrive); when a
        backlog waits behind them, wait up to MAX_BATCH_WAIT_MS for companions so that a batch
        can fill. A lone request on an idle worker does not wait. Priority records first."""
        records = await self._urgent(limit, timeout_ms=0)
        if len(records) < limit:
            wait_ms = 0 if records else 200
            got = await self._consumer.getmany(timeout_ms=wait_ms, max_records=limit - len(records))
            records += _flat(got)
        self._last_poll = time.monotonic()
        wait_ms = self._config.max_batch_wait_ms
        batching = self._config.max_batch_size > 1 and wait_ms > 0
        if records and len(records) < limit and batching and self._backlog(records):
            more = await self._consumer.getmany(
                timeout_ms=wait_ms, max_records=limit - len(records)
            )
            records += _flat(more)
        self._update_lag(records)
        return records

    async def while_busy(self, freed: asyncio.Event, urgent_limit: int) -> Records:
        """No room for regular work (its partitions paused): until a slot is `freed` (at most
        BUSY_WAIT_SECONDS), take priority records as they come, up to `urgent_limit`; without
        open priority partitions, a keep-alive poll."""
        urgent = self._open_urgent() if urgent_limit > 0 else []
        if not urgent:
            await event_within(freed, BUSY_WAIT_SECONDS)
            return await self.keep_alive()
        timeout_ms = int(BUSY_WAIT_SECONDS * 1000)
        poll = asyncio.ensure_future(
            self._consumer.getmany(*urgent, timeout_ms=timeout_ms, max_records=urgent_limit)
        )
        freeing = asyncio.ensure_future(freed.wait())
        try:
            await asyncio.wait({poll, freeing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            freeing.cancel()
            if not poll.done():
                # Safe: aiokafka waits only while it has nothing to hand back (nothing lost).
                poll.cancel()
                await asyncio.wait({poll})
        self._last_poll = time.monotonic()
        if poll.cancelled():
            return []
        records = _flat(poll.result())
        self._update_lag(records)
        return records

    async def _urgent(self, limit: int, timeout_ms: int) -> Records:
        urgent = self._open_urgent()
        if not urgent or limit <= 0:
            return []
        return _flat(
            await self._consumer.getmany(*urgent, timeout_ms=timeout_ms, max_records=limit)
        )

    def _open_urgent(self) -> list[TopicPartition]:
        """The priority partitions assigned and not paused."""
        consumer = self._consumer
        return self._lanes.priority_partitions(consumer.assignment() - consumer.paused())

    async def keep_alive(self) -> Records:
        """While partitions are paused, poll now and then: heartbeats run on their own, but
        max_poll_interval needs a poll. Not more often: each poll of a paused partition throws
        away the records aiokafka had prefetched for it, which are then fetched again. A poll can
        still return records (a partition assigned meanwhile starts unpaused)."""
        if time.monotonic() - self._last_poll <= self._config.keepalive_poll_seconds:
            return []
        got = await self._consumer.getmany(timeout_ms=0, max_records=self._config.max_batch_size)
        self._last_poll = time.monotonic()
        return _flat(got)

    def _backlog(self, records: Records) -> bool:
        """True when a partition has records beyond those just polled."""
        for tp, offset in _last_offsets(records).items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None and highwater > offset + 1:
                return True
        return False

    def _update_lag(self, records: Records) -> None:
        for tp, offset in _last_offsets(records).items():
            highwater = self._consumer.highwater(tp)
            if highwater is not None:
                lag = max(0, highwater - offset - 1)
                gauge = self._metrics.lag_gauge(self._lanes.urgent(tp.topic))
                gauge.labels(str(tp.partition)).set(lag)


def _last_offsets(records: Records) -> dict[TopicPartition, int]:
    return {TopicPartition(r.topic, r.partition): r.offset for r in records}


def _flat(got: dict[TopicPartition, Records]) -> Records:
    return [record for records in got.values() for record in records]
