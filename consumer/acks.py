"""The acknowledgement rule, in one place: publish the result (or dead letter), wait for the
broker's acknowledgement, then commit — never past an offset whose request is not finished."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer import kafka_io
from consumer.batching import OffsetTracker
from consumer.metrics import WorkerMetrics
from consumer.settings import Settings
from schemas import ErrorInfo, GenerationResult

log = logging.getLogger(__name__)


class BrokerGaveUp(Exception):
    """The broker stayed away until the worker stopped: nothing published, nothing committed."""


class Acknowledger:
    def __init__(
        self,
        settings: Settings,
        producer: AIOKafkaProducer,
        consumer: AIOKafkaConsumer,
        metrics: WorkerMetrics,
        giving_up: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._consumer = consumer
        self._metrics = metrics
        self._giving_up = giving_up
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._commit_lock = asyncio.Lock()
        self.completed = 0

    def track(self, record: ConsumerRecord[Any, Any]) -> None:
        """Called for every record taken, before anything is done with it."""
        tp = TopicPartition(record.topic, record.partition)
        self._trackers.setdefault(tp, OffsetTracker()).add(record.offset)
        self._metrics.in_flight.inc()

    async def publish(
        self, records: list[ConsumerRecord[Any, Any]], results: list[GenerationResult]
    ) -> None:
        if not records:
            return
        topic = self._settings.result_topic
        await self._retry(partial(kafka_io.publish_results, self._producer, topic, results))
        now = time.time()
        for record in records:
            if record.timestamp:
                self._metrics.request_seconds.observe(max(0.0, now - record.timestamp / 1000))
        self.completed += len(records)
        await self._done(records)

    async def dead_letters(self, letters: list[tuple[ConsumerRecord[Any, Any], ErrorInfo]]) -> None:
        if not letters:
            return
        for record, error in letters:
            where = {"partition": record.partition, "offset": record.offset}
            log.warning("dead letter", extra={**where, "code": error.code.value})
        topic = self._settings.dlq_topic
        await self._retry(partial(kafka_io.publish_dead_letters, self._producer, topic, letters))
        self._metrics.dead_letters.inc(len(letters))
        await self._done([record for record, _ in letters])

    async def _retry(self, send: Callable[[], Awaitable[None]]) -> None:
        """Retry a publish while the broker is away; give up only when the worker stops."""
        delay = 0.5
        while True:
            try:
                await send()
                return
            except KafkaError as exc:
                if self._giving_up():
                    raise BrokerGaveUp from exc
                log.warning("publish failed (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _done(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        touched = set()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            tracker = self._trackers.get(tp)
            if tracker is not None:  # None: the partition was revoked meanwhile
                self._metrics.in_flight.dec()
                tracker.done([record.offset])
                touched.add(tp)
        await self.commit(touched)

    async def commit(self, partitions: set[TopicPartition]) -> None:
        offsets = {}
        for tp in partitions:
            tracker = self._trackers.get(tp)
            position = tracker.committable() if tracker is not None else None
            if position is not None:
                offsets[tp] = position
        if not offsets:
            return
        async with self._commit_lock:
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # Another member owns the partition now and will redeliver: keys are deterministic.
                log.warning("commit refused after a rebalance: %s", exc)

    async def hand_over(self, revoked: set[TopicPartition]) -> None:
        """Commit what is done on revoked partitions and forget them."""
        await self.commit(revoked)
        for tp in revoked:
            tracker = self._trackers.pop(tp, None)
            if tracker is not None:
                self._metrics.in_flight.dec(len(tracker))
