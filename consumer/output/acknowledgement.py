"""The acknowledgement rule, in one place: publish the result (or dead letter), wait for the
broker's acknowledgement, then commit — never past an offset whose request is not finished.

Offsets are tracked per partition from the moment a record is taken. A partition revoked while
one of its batches still runs keeps its tracker: if it comes straight back (the usual eager
rebalance), the batch's result is committed when it finishes, and the re-fetched records of that
batch are recognised and skipped instead of being generated twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from functools import partial
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer.intake.kafka_io import OutRecord, dead_letter_record, result_record
from consumer.intake.offsets import OffsetTracker
from consumer.ops.metrics import WorkerMetrics
from consumer.output.config import OutputConfig
from consumer.output.publishing import Delivery, Publisher
from consumer.stoppable import bounded
from schemas import ErrorCode, ErrorInfo, GenerationResult
from schemas.cloudevents import ce_source, trace_headers

log = logging.getLogger(__name__)

# A commit waits at most this long for the broker (aiokafka retries a commit for as long as the
# group coordinator is away), then it counts as failed and is made again with the next one; once
# the caller stops (`until`), at most LAST_COMMIT_SECONDS more.
COMMIT_TIMEOUT_SECONDS = 10.0
LAST_COMMIT_SECONDS = 2.0

Record: TypeAlias = ConsumerRecord[Any, Any]


class Acknowledger:
    def __init__(
        self,
        config: OutputConfig,
        publisher: Publisher,
        consumer: AIOKafkaConsumer,
        metrics: WorkerMetrics,
    ) -> None:
        self._config = config
        self._source = ce_source(config.group_id)  # ce_source of every record we write
        self._publisher = publisher
        self._consumer = consumer
        self._metrics = metrics
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._commit_lock = asyncio.Lock()
        self._to_commit: set[TopicPartition] = set()  # done offsets waiting for a commit
        self._failed_commits: dict[TopicPartition, int] = {}  # retried with the next commit
        self._landed: dict[TopicPartition, int] = {}  # the last offset each commit made
        self.completed = 0
        metrics.in_flight.set_function(self.in_flight)

    def in_flight(self) -> int:
        return sum(tracker.in_flight for tracker in self._trackers.values())

    def lane(self, record: Record) -> str:
        """`priority` for a record of PRIORITY_TOPIC, else `regular`."""
        return self._config.lane(record.topic)

    def take(self, record: Record) -> bool:
        """Called for every record polled, before anything is done with it. False: this member
        is already working on it (or has finished it), so it must be skipped."""
        return self._tracker(record).take(record.offset)

    def release(self, records: Iterable[Record]) -> None:
        """Work dropped before it started: it will be fetched (and taken) again."""
        for record in records:
            self._tracker(record).release([record.offset])

    async def publish_then_commit(
        self, records: list[Record], results: list[GenerationResult], until: asyncio.Event
    ) -> bool:
        """Publish each request's result, then commit; True once a commit covering every record
        has landed (False: it failed or was refused, and the records may be delivered again).
        Raises BrokerGaveUp when `until` is set while the broker is away (nothing committed)."""
        published = await self.publish(records, results, until)
        if not published:
            return self.committed(records)
        await self.commit_published(published, until)
        return self.committed(published)

    async def publish(
        self, records: list[Record], results: list[GenerationResult], until: asyncio.Event
    ) -> list[Record]:
        """The first half of publish_then_commit: each request's result published (the broker
        acknowledged it); the records to commit next (commit_published), those of a record
        already answered left out. Raises as publish_then_commit."""
        pairs = [(r, res) for r, res in zip(records, results, strict=True) if self._first(r)]
        if not pairs:
            return []
        records = [record for record, _ in pairs]
        deliveries = [self._result_delivery(record, result) for record, result in pairs]
        await self._publisher.deliver(deliveries, until)
        now = time.time()
        for record in records:
            if record.timestamp:
                latency = self._metrics.request_seconds.labels(self.lane(record))
                latency.observe(max(0.0, now - record.timestamp / 1000))
        self.completed += len(records)
        return records

    async def commit_published(self, records: list[Record], until: asyncio.Event) -> None:
        """The second half: the offsets of `records` (their results published) committed."""
        await self._done(records, until)

    async def dead_letters(
        self, letters: list[tuple[Record, ErrorInfo]], until: asyncio.Event
    ) -> None:
        if not letters:
            return
        for record, error in letters:
            where = {"partition": record.partition, "offset": record.offset}
            log.warning("dead letter", extra={**where, "code": error.code.value})
        deliveries = [self._dead_letter_delivery(record, error) for record, error in letters]
        await self._publisher.deliver(deliveries, until)
        self._metrics.dead_letters.inc(len(letters))
        await self._done([record for record, _ in letters], until)

    def _first(self, record: Record) -> bool:
        """One outcome per record: a second answer for a record already answered is a bug,
        logged and dropped, never published."""
        if not self._tracker(record).answered(record.offset):
            return True
        where = {"partition": record.partition, "offset": record.offset}
        log.error("a second outcome for an answered record was dropped", extra=where)
        return False

    def _result_delivery(self, record: Record, result: GenerationResult) -> Delivery:
        topic, request_id = self._config.result_topic, result.request_id or ""
        trace = trace_headers(record.headers)

        def minimal() -> OutRecord:
            failed = GenerationResult.failed(request_id, ErrorCode.RESULT_REFUSED)
            return result_record(topic, failed, self._source, trace)

        refused = ErrorInfo.public(ErrorCode.RESULT_REFUSED)
        return Delivery(
            request_id,
            (
                partial(result_record, topic, result, self._source, trace),
                minimal,
                partial(self._dead_letter, record, refused),
            ),
        )

    def _dead_letter_delivery(self, record: Record, error: ErrorInfo) -> Delivery:
        def bare() -> OutRecord:  # the headers still say where it came from and why
            return replace(self._dead_letter(record, error), value=None)

        label = f"{record.topic}:{record.partition}@{record.offset}"
        return Delivery(label, (partial(self._dead_letter, record, error), bare))

    def _dead_letter(self, record: Record, error: ErrorInfo) -> OutRecord:
        limit = self._config.max_record_bytes
        return dead_letter_record(self._config.dlq_topic, record, error, limit, self._source)

    async def _done(self, records: list[Record], until: asyncio.Event | None = None) -> None:
        touched = set()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._tracker(record).done([record.offset])
            touched.add(tp)
        await self.commit(touched, until)

    def landed(self, partition: tuple[str, int]) -> int:
        """The offset this member's commits on `partition` have reached (-1: none)."""
        return self._landed.get(TopicPartition(*partition), -1)

    def committed(self, records: list[Record]) -> bool:
        """True once commits made by this member cover every record."""
        return all(
            self._landed.get(TopicPartition(r.topic, r.partition), -1) > r.offset for r in records
        )

    async def commit(
        self, partitions: Iterable[TopicPartition], until: asyncio.Event | None = None
    ) -> None:
        """Commit what is done on the given partitions that this member still owns; returns once
        a commit that covers it has been made (or has failed and waits for the next one).

        Coalesced: callers that arrive while a commit is in flight wait for it, and the first
        of them then commits for all of them at once, instead of one round trip each behind
        one another (four per batch of four requests)."""
        self._to_commit.update(partitions)
        async with self._commit_lock:
            await self._commit_pending(until)

    async def _commit_pending(self, until: asyncio.Event | None) -> None:
        partitions, self._to_commit = self._to_commit, set()
        owned = self._consumer.assignment()
        offsets = {tp: o for tp, o in self._failed_commits.items() if tp in owned}
        self._failed_commits.clear()
        for tp in partitions:
            tracker = self._trackers.get(tp)
            position = tracker.committable() if tracker is not None and tp in owned else None
            if position is not None:
                offsets[tp] = position
        if offsets:
            try:
                await bounded(
                    self._consumer.commit(offsets),
                    until,
                    COMMIT_TIMEOUT_SECONDS,
                    LAST_COMMIT_SECONDS,
                )
                for tp, offset in offsets.items():
                    self._landed[tp] = max(offset, self._landed.get(tp, 0))
            except (CommitFailedError, IllegalStateError) as exc:
                # Another member owns the partition now and will redeliver: keys are deterministic.
                log.warning("commit refused after a rebalance: %s", exc)
            except (KafkaError, TimeoutError) as exc:  # the broker away: tried with the next one
                log.warning("commit failed (%s); retried with the next one", type(exc).__name__)
                for tp, offset in offsets.items():
                    self._failed_commits[tp] = max(offset, self._failed_commits.get(tp, 0))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit what is done; keep the trackers of partitions with work still running."""
        await self.commit(revoked)
        for tp in revoked:
            tracker = self._trackers.get(tp)
            if tracker is not None and tracker.idle:
                del self._trackers[tp]

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        """Re-attach kept trackers to partitions that came back; forget the others."""
        for tp in [tp for tp in self._trackers if tp not in assigned]:
            if self._trackers[tp].idle:
                del self._trackers[tp]
        for tp in assigned & set(self._trackers):
            committed = await self._committed(tp)
            ahead = self._trackers[tp].forget_below(committed) if committed is not None else None
            if ahead is not None:
                self._failed_commits[tp] = ahead
        await self.commit(assigned)

    async def _committed(self, tp: TopicPartition) -> int | None:
        try:
            offset = await bounded(self._consumer.committed(tp), None, COMMIT_TIMEOUT_SECONDS)
        except (KafkaError, TimeoutError) as exc:
            log.warning("could not read the committed offset of %s: %s", tp, exc)
            return None
        return offset if isinstance(offset, int) else None

    def _tracker(self, record: Record) -> OffsetTracker:
        tp = TopicPartition(record.topic, record.partition)
        return self._trackers.setdefault(tp, OffsetTracker())
