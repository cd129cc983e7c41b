"""Polling the consumer: a fetch that lets a batch fill, and a keep-alive poll while paused.

Both hand back whatever the poll returned, for the worker to take: a record returned by a poll is
never dropped (aiokafka has moved its fetch position past it).
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from consumer.intake.config import PollingConfig
from consumer.ops.metrics import WorkerMetrics

Records = list[ConsumerRecord[Any, Any]]


class Poller:
    def __init__(
        self, consumer: AIOKafkaConsumer, config: PollingConfig, metrics: WorkerMetrics
    ) -> None:
        self._consumer = consumer
        self._config = config
        self._metrics = metrics
        self._last_poll = time.monotonic()

    async def fetch(self, limit: int) -> Records:
        """Whatever is waiting, up to `limit` (a poll returns as soon as records arrive); when a
        backlog waits behind them, wait up to MAX_BATCH_WAIT_MS for companions so that a batch
        can fill. A lone request on an idle worker does not wait."""
        got = await self._consumer.getmany(timeout_ms=200, max_records=limit)
        self._last_poll = time.monotonic()
        records = _flat(got)
        wait_ms = self._config.max_batch_wait_ms
        batching = self._config.max_batch_size > 1 and wait_ms > 0
        if records and len(records) < limit and batching and self._backlog(records):
            more = await self._consumer.getmany(
                timeout_ms=wait_ms, max_records=limit - len(records)
            )
            records += _flat(more)
        self._update_lag(records)
        return records

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
                self._metrics.consumer_lag.labels(str(tp.partition)).set(lag)


def _last_offsets(records: Records) -> dict[TopicPartition, int]:
    return {TopicPartition(r.topic, r.partition): r.offset for r in records}


def _flat(got: dict[TopicPartition, Records]) -> Records:
    return [record for records in got.values() for record in records]
