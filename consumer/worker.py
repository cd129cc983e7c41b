"""The Kafka worker: one group member that turns request records into result records.

Acknowledgement (acks.py): images stored, result acknowledged by the broker, then the offset
committed, never past a request that is not finished. Intake reserves capacity first: when
`max_batches_in_flight` batches are running, partitions are paused and the loop keeps polling,
so heartbeats and the poll interval never lapse during a long batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

from consumer import kafka_io
from consumer.acks import Acknowledger, BrokerGaveUp
from consumer.batching import group_batches
from consumer.engine import Engine, GenerationJob, plan_job
from consumer.logs import log_result
from consumer.metrics import WorkerMetrics
from consumer.processing import Abandoned, BatchProcessor
from consumer.rebalance import RebalanceListener
from consumer.settings import Settings
from schemas import (
    Accepted,
    ErrorCode,
    ErrorInfo,
    GenerationResult,
    ParseOutcome,
    Rejected,
    Undeliverable,
    parse_request,
)
from storage import ImageStore

log = logging.getLogger(__name__)

KEEPALIVE_POLL_SECONDS = 30.0  # well inside aiokafka's max_poll_interval (300 s)


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
        self._io_threads = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="io")
        self._processor = BatchProcessor(
            engine,
            store,
            key_prefix=settings.s3_key_prefix,
            timeout_seconds=settings.generation_timeout_seconds,
            max_backoff_seconds=settings.storage_retry_max_backoff_seconds,
            png_compress_level=settings.png_compress_level,
            engine_thread=self._engine_thread,
            io_threads=self._io_threads,
            on_storage_retry=self.metrics.storage_retries.inc,
        )
        self._stopping = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._pending: deque[list[Work]] = deque()
        self._running: dict[asyncio.Task[None], list[Work]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._acks: Acknowledger | None = None
        self._last_poll = time.monotonic()
        self.draining = False
        self.revocations = 0  # rebalances that took partitions away from this worker

    # --- lifecycle ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets an event."""
        self._stopping.set()

    @property
    def completed(self) -> int:
        """Requests finished (result published and committed) by this worker."""
        return self._acks.completed if self._acks is not None else 0

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
        self._acks = Acknowledger(
            self.settings, self._producer, consumer, self.metrics, lambda: self._processor.abandoned
        )
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
            self._slot_freed.clear()  # before counting: a slot freed from here on wakes us
            self._start_pending()
            free = self.settings.max_batches_in_flight - len(self._running)
            if self._pending or free <= 0:
                consumer.pause(*consumer.assignment())
                await self._wait_for_slot(1.0)
                await self._keep_polling(consumer)
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

    async def _keep_polling(self, consumer: AIOKafkaConsumer) -> None:
        """Heartbeats run on their own; only max_poll_interval needs a poll now and then while
        partitions are paused. Not more often: each poll of a paused partition throws away
        the records aiokafka had already fetched for it, which are then fetched again."""
        if time.monotonic() - self._last_poll > KEEPALIVE_POLL_SECONDS:
            await consumer.getmany(timeout_ms=0)
            self._last_poll = time.monotonic()

    def _idle_for(self, since: float) -> bool:
        return self._exit_when_idle is not None and time.monotonic() - since >= self._exit_when_idle

    async def _wait_for_slot(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._slot_freed.wait(), timeout)

    async def _fetch(
        self, consumer: AIOKafkaConsumer, limit: int
    ) -> list[ConsumerRecord[Any, Any]]:
        """Whatever is waiting, up to `limit`; after a first record, wait up to MAX_BATCH_WAIT_MS
        for companions so that a batch can fill."""
        got = await consumer.getmany(timeout_ms=200, max_records=limit)
        self._last_poll = time.monotonic()
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
        assert self._acks is not None
        works, rejected, dead = [], [], []
        for record in records:
            self._acks.track(record)
            outcome = self._parse(record)
            if isinstance(outcome, Accepted):
                job = plan_job(outcome.request, self.settings.default_negative_prompt)
                works.append(Work(record, job))
            elif isinstance(outcome, Rejected):
                rejected.append((record, outcome.result()))
                self.metrics.generations.labels("rejected", "none").inc()
                log.info(
                    "request rejected",
                    extra={"request_id": outcome.request_id, "code": outcome.error.code.value},
                )
            else:
                dead.append((record, outcome.error))
        await self._acks.publish([r for r, _ in rejected], [result for _, result in rejected])
        await self._acks.dead_letters(dead)
        return works

    def _parse(self, record: ConsumerRecord[Any, Any]) -> ParseOutcome:
        try:
            return parse_request(record.value, self._limits)
        except Exception:  # a validator bug must cost one dead letter, not the worker
            log.exception("validation raised", extra={"offset": record.offset})
            message = "the event could not be validated"
            return Undeliverable(ErrorInfo(code=ErrorCode.INVALID_REQUEST, message=message))

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
        assert self._acks is not None
        try:
            await asyncio.shield(self._acks.publish([w.record for w in batch], results))
        except BrokerGaveUp:
            log.warning("broker away at shutdown: %d result(s) left for redelivery", len(batch))

    def _observe(self, work: Work, result: GenerationResult) -> None:
        model = work.job.model
        self.metrics.generations.labels(result.status.value, model).inc()
        if result.audit is not None:
            self.metrics.generation_seconds.labels(model).observe(float(result.audit.duration_sec))
        log_result(work.job, result, work.record.timestamp, self.settings.log_prompts)

    # --- rebalance ------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop work not started, let running work finish within a bound, commit what is done."""
        self.revocations += 1
        self._pending = deque(b for b in self._pending if not any(w.tp in revoked for w in b))
        touching = [t for t, b in self._running.items() if any(w.tp in revoked for w in b)]
        bound = min(
            self.settings.drain_timeout_seconds, self.settings.kafka_session_timeout_ms / 2000
        )
        await self.wait_for_running(touching, bound)
        if self._acks is not None:
            await self._acks.hand_over(revoked)
