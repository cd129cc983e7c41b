"""The Kafka worker: one group member that turns request records into result records.

Acknowledgement rule, in one place (`_publish_and_commit`): images stored, result acknowledged by
the broker, then the offset committed, never past a request that is not finished. Intake reserves
capacity first: when `max_batches_in_flight` batches are running, partitions are paused and the
loop keeps polling, so heartbeats and the poll interval never lapse during a long batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumer import kafka_io
from consumer.batching import OffsetTracker, group_batches
from consumer.engine import Engine, GenerationJob, plan_job
from consumer.logs import log_result
from consumer.metrics import WorkerMetrics
from consumer.processing import Abandoned, BatchProcessor
from consumer.rebalance import RebalanceListener
from consumer.settings import Settings
from schemas import Accepted, ErrorInfo, GenerationResult, Rejected, parse_request
from storage import ImageStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Work:
    record: ConsumerRecord[Any, Any]
    job: GenerationJob

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


class Worker:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: ImageStore,
        metrics: WorkerMetrics | None = None,
        exit_when_idle: float | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or WorkerMetrics()
        self.metrics.watch_cache(lambda: engine.stats)
        self._limits = settings.request_limits()
        self._exit_when_idle = exit_when_idle
        self._engine_thread = ThreadPoolExecutor(1, thread_name_prefix="engine")
        self._io_threads = ThreadPoolExecutor(4, thread_name_prefix="io")
        self._processor = BatchProcessor(
            engine,
            store,
            key_prefix=settings.s3_key_prefix,
            timeout_seconds=settings.generation_timeout_seconds,
            max_backoff_seconds=settings.storage_retry_max_backoff_seconds,
            engine_thread=self._engine_thread,
            io_threads=self._io_threads,
            on_storage_retry=self.metrics.storage_retries.inc,
        )
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self._pending: deque[list[Work]] = deque()
        self._running: dict[asyncio.Task[None], list[Work]] = {}
        self._trackers: dict[TopicPartition, OffsetTracker] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.draining = False
        self.completed = 0

    # --- lifecycle ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets an event."""
        self._stopping.set()

    @property
    def broker_connected(self) -> bool:
        return self._consumer is not None and not self.draining

    @property
    def ready(self) -> bool:
        return self._consumer is not None and bool(self.assignment()) and not self.draining

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._consumer.assignment()) if self._consumer is not None else []

    async def run(self) -> None:
        self._producer = await kafka_io.start_producer(self.settings)
        consumer = kafka_io.build_consumer(self.settings)
        consumer.subscribe([self.settings.request_topic], listener=RebalanceListener(self))
        try:
            await consumer.start()
            self._consumer = consumer
            log.info("worker started", extra={"partitions": [str(tp) for tp in self.assignment()]})
            await self._intake(consumer)
        finally:
            await self._drain_and_close(consumer)

    async def _drain_and_close(self, consumer: AIOKafkaConsumer) -> None:
        self.draining = True
        self._pending.clear()  # not started: left uncommitted, so they are delivered again
        with contextlib.suppress(IllegalStateError):
            consumer.pause(*consumer.assignment())
        await self.wait_for_running(list(self._running), self.settings.drain_timeout_seconds)
        if self._running:
            log.warning("drain timeout: abandoning %d batch(es)", len(self._running))
            self._processor.abandon()
            await self.wait_for_running(list(self._running), 10.0)
        await kafka_io.leave_group(consumer)
        await consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        self._engine_thread.shutdown(wait=False, cancel_futures=True)
        self._io_threads.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", extra={"completed": self.completed})

    async def wait_for_running(self, tasks: Sequence[asyncio.Task[None]], timeout: float) -> None:
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    # --- intake ---------------------------------------------------------------------------------

    async def _intake(self, consumer: AIOKafkaConsumer) -> None:
        idle_since = time.monotonic()
        while not self._stopping.is_set():
            self._start_pending()
            free = self.settings.max_batches_in_flight - len(self._running)
            if self._pending or free <= 0:
                consumer.pause(*consumer.assignment())
                await self._wait_for_slot(0.5)
                await consumer.getmany(timeout_ms=0)  # a poll: keeps us a live group member
                continue
            consumer.resume(*consumer.paused())
            records = await self._fetch(consumer, free * self.settings.max_batch_size)
            if records or self._running:
                idle_since = time.monotonic()
            elif self._idle_for(idle_since):
                log.info("idle: stopping")
                return
            works = await self._triage(records)
            batches = group_batches(
                works,
                key=lambda w: w.job.batch_key,
                size=lambda w: w.job.num_images,
                max_images=self.settings.max_batch_size,
            )
            self._pending.extend(batches)

    def _idle_for(self, since: float) -> bool:
        return self._exit_when_idle is not None and time.monotonic() - since >= self._exit_when_idle

    async def _wait_for_slot(self, timeout: float) -> None:
        self._slot_freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), timeout)

    async def _fetch(
        self, consumer: AIOKafkaConsumer, limit: int
    ) -> list[ConsumerRecord[Any, Any]]:
        """Whatever is waiting, up to `limit`; after a first record, wait up to MAX_BATCH_WAIT_MS
        for companions so that a batch can fill."""
        got = await consumer.getmany(timeout_ms=200, max_records=limit)
        records = [r for rs in got.values() for r in rs]
        wait_ms = self.settings.max_batch_wait_ms
        if records and len(records) < limit and wait_ms > 0 and self.settings.max_batch_size > 1:
            more = await consumer.getmany(timeout_ms=wait_ms, max_records=limit - len(records))
            records += [r for rs in more.values() for r in rs]
        self._update_lag(consumer, records)
        return records

    def _update_lag(
        self, consumer: AIOKafkaConsumer, records: list[ConsumerRecord[Any, Any]]
    ) -> None:
        last: dict[TopicPartition, int] = {}
        for r in records:
            last[TopicPartition(r.topic, r.partition)] = r.offset
        for tp, offset in last.items():
            highwater = consumer.highwater(tp)
            if highwater is not None:
                self.metrics.consumer_lag.labels(str(tp.partition)).set(
                    max(0, highwater - offset - 1)
                )

    async def _triage(self, records: list[ConsumerRecord[Any, Any]]) -> list[Work]:
        """Valid requests become work; invalid ones get their rejected result or dead letter now."""
        works = []
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._trackers.setdefault(tp, OffsetTracker()).add(record.offset)
            self.metrics.in_flight.inc()
            outcome = parse_request(record.value, self._limits)
            if isinstance(outcome, Accepted):
                job = plan_job(outcome.request, self.settings.default_negative_prompt)
                works.append(Work(record, job))
            elif isinstance(outcome, Rejected):
                result = outcome.result()
                self.metrics.generations.labels(result.status.value, "none").inc()
                log.info(
                    "request rejected",
                    extra={"request_id": outcome.request_id, "code": outcome.error.code.value},
                )
                await self._publish_and_commit([record], [result])
            else:
                await self._dead_letter(record, outcome.error)
        return works

    # --- batches --------------------------------------------------------------------------------

    def _start_pending(self) -> None:
        while self._pending and len(self._running) < self.settings.max_batches_in_flight:
            batch = self._pending.popleft()
            task = asyncio.create_task(self._run_batch(batch))
            self._running[task] = batch
            task.add_done_callback(self._batch_done)

    def _batch_done(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch task failed", exc_info=task.exception())

    async def _run_batch(self, batch: list[Work]) -> None:
        self.metrics.batch_size.observe(sum(w.job.num_images for w in batch))
        try:
            results = await self._processor.run([w.job for w in batch])
        except Abandoned:
            log.warning("abandoned %d request(s); they will be delivered again", len(batch))
            return
        for work, result in zip(batch, results, strict=True):
            self._observe(work, result)
        # Shielded: a cancelled drain must not interrupt a publish between send and commit.
        await asyncio.shield(self._publish_and_commit([w.record for w in batch], results))

    def _observe(self, work: Work, result: GenerationResult) -> None:
        model = work.job.model
        self.metrics.generations.labels(result.status.value, model).inc()
        if result.audit is not None:
            self.metrics.generation_seconds.labels(model).observe(float(result.audit.duration_sec))
        log_result(work.job, result, work.record.timestamp, self.settings.log_prompts)

    # --- acknowledgement ------------------------------------------------------------------------

    async def _publish_and_commit(
        self, records: list[ConsumerRecord[Any, Any]], results: list[GenerationResult]
    ) -> None:
        assert self._producer is not None
        for record, result in zip(records, results, strict=True):
            await self._retry_broker(
                partial(kafka_io.publish_result, self._producer, self.settings.result_topic, result)
            )
            if record.timestamp:
                self.metrics.request_seconds.observe(
                    max(0.0, time.time() - record.timestamp / 1000)
                )
        self.completed += len(records)
        await self._mark_done(records)

    async def _dead_letter(self, record: ConsumerRecord[Any, Any], error: ErrorInfo) -> None:
        assert self._producer is not None
        log.warning(
            "dead letter",
            extra={
                "partition": record.partition,
                "offset": record.offset,
                "code": error.code.value,
            },
        )
        await self._retry_broker(
            partial(
                kafka_io.publish_dead_letter, self._producer, self.settings.dlq_topic, record, error
            )
        )
        self.metrics.dead_letters.inc()
        await self._mark_done([record])

    async def _retry_broker(self, send: Callable[[], Awaitable[None]]) -> None:
        """Retry a publish while the broker is away; give up only when the worker is stopping."""
        delay = 0.5
        while True:
            try:
                await send()
                return
            except KafkaError as exc:
                if self._processor.abandoned:
                    raise Abandoned from exc
                log.warning("publish failed (%s); retrying in %.1fs", type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def _mark_done(self, records: list[ConsumerRecord[Any, Any]]) -> None:
        touched = set()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            tracker = self._trackers.get(tp)
            if tracker is not None:  # None: the partition was revoked meanwhile
                self.metrics.in_flight.dec()
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
        if not offsets or self._consumer is None:
            return
        async with self._commit_lock:
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, IllegalStateError) as exc:
                # Another member owns the partition now and will redeliver: keys are deterministic.
                log.warning("commit refused after a rebalance: %s", exc)

    # --- rebalance ------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop work not started, let running work finish within a bound, commit what is done."""
        self._pending = deque(b for b in self._pending if not any(w.tp in revoked for w in b))
        touching = [t for t, b in self._running.items() if any(w.tp in revoked for w in b)]
        bound = min(
            self.settings.drain_timeout_seconds, self.settings.kafka_session_timeout_ms / 2000
        )
        await self.wait_for_running(touching, bound)
        await self.commit(set(revoked))
        for tp in revoked:
            tracker = self._trackers.pop(tp, None)
            if tracker is not None:
                self.metrics.in_flight.dec(len(tracker))
