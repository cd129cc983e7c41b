"""Cancels and deadlines: which requests must stop, and the control topic that says so.

Every worker reads the whole control topic (no consumer group: a cancel must reach whichever
worker holds its request), starting CANCEL_RETENTION_SECONDS back, so a cancel sent before its
request arrived, or before this worker started, is still honoured. The StopBoard remembers cancels
for that long (and at most MAX_CANCELS of them) and answers, for the engine thread at each
denoising step, which requests of a batch must stop now: cancelled ones, and those past their
deadline.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumer.generation.engine import GenerationJob
from consumer.intake import kafka_io
from consumer.intake.clocks import record_time
from consumer.intake.config import ControlConfig, KafkaConfig
from consumer.stoppable import Backoff, StopRequested
from schemas import ErrorCode
from schemas.control import CancelCommand, parse_control

log = logging.getLogger(__name__)

MAX_CANCELS = 100_000


class StopBoard:
    """Thread-safe: filled on the event loop, read by the engine thread.

    A cancel counts for CANCEL_RETENTION_SECONDS from its record's time, checked when it is
    read (a quiet worker must not honour one for ever that a newer worker would ignore). At
    most `max_entries` are kept; a flood of cancels for unknown ids evicts the oldest of them,
    never one for a request this worker holds (`holds`: queued or running here)."""

    def __init__(
        self,
        retention_seconds: float,
        max_entries: int = MAX_CANCELS,
        holds: Callable[[str], bool] = lambda request_id: False,
    ) -> None:
        self._retention = retention_seconds
        self._max = max_entries
        self._holds = holds
        self._cancelled: OrderedDict[str, float] = OrderedDict()  # request_id -> when (wall)
        self._lock = threading.Lock()

    def cancel(self, request_id: str, at: float | None = None) -> None:
        """Called on the event loop (`holds` reads the worker's queues there)."""
        with self._lock:
            self._cancelled[request_id] = time.time() if at is None else at
            self._cancelled.move_to_end(request_id)
            self._forget_old()

    def due(self, jobs: Iterable[GenerationJob], now: float | None = None) -> dict[str, ErrorCode]:
        """The requests among `jobs` that must stop now, and why."""
        now = time.time() if now is None else now
        horizon = now - self._retention
        stops = {}
        with self._lock:
            for job in jobs:
                cancelled_at = self._cancelled.get(job.request_id)
                if cancelled_at is not None and cancelled_at >= horizon:
                    stops[job.request_id] = ErrorCode.CANCELLED
                elif job.deadline is not None and now >= job.deadline:
                    stops[job.request_id] = ErrorCode.DEADLINE_EXCEEDED
        return stops

    def __len__(self) -> int:
        return len(self._cancelled)

    def _forget_old(self) -> None:
        horizon = time.time() - self._retention
        while self._cancelled and next(iter(self._cancelled.values())) < horizon:
            self._cancelled.popitem(last=False)
        while len(self._cancelled) > self._max:  # the oldest first, each found in O(held)
            victim = next((rid for rid in self._cancelled if not self._holds(rid)), None)
            if victim is None:
                break
            del self._cancelled[victim]


class ControlListener:
    """Reads CONTROL_TOPIC into a StopBoard until the worker stops."""

    def __init__(
        self,
        control: ControlConfig,
        kafka: KafkaConfig,
        board: StopBoard,
        stop: asyncio.Event,
        on_cancel: Callable[[], None] = lambda: None,
    ) -> None:
        self._control = control
        self._kafka = kafka
        self._board = board
        self._on_cancel = on_cancel  # counts cancels read (a metric)
        self._stop = stop

    async def run(self) -> None:
        backoff = Backoff(1.0, 30.0)
        while not self._stop.is_set():
            try:
                await self._listen()
            except (KafkaError, OSError) as exc:
                log.warning("control topic unavailable (%s); retrying", type(exc).__name__)
            try:
                await backoff.wait(self._stop)
            except StopRequested:
                return

    async def _listen(self) -> None:
        kafka = self._kafka
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=max(100, kafka.fetch_max_wait_ms),
            client_id="sdxl-worker-control",
            **kafka_io.security_options(kafka),
        )
        await consumer.start()
        try:
            await self._rewind(consumer)
            while not self._stop.is_set():
                got = await consumer.getmany(timeout_ms=500)
                for record in (r for records in got.values() for r in records):
                    command = parse_control(record.value)
                    if isinstance(command, CancelCommand):
                        self._take_cancel(command.request_id, record)
        finally:
            await kafka_io.close_quietly(consumer.stop(), "close control consumer")

    def _take_cancel(self, request_id: str, record: ConsumerRecord[Any, Any]) -> None:
        """Every worker reads every cancel: at debug level and counted, so that a flood of
        them costs no log volume."""
        skew = self._control.clock_skew_seconds
        at = record_time(record.timestamp, record.timestamp_type, skew, time.time())
        self._board.cancel(request_id, at)
        self._on_cancel()
        log.debug("cancel received", extra={"request_id": request_id})

    async def _rewind(self, consumer: AIOKafkaConsumer) -> None:
        """Assign every partition and start CANCEL_RETENTION_SECONDS back."""
        topic = self._control.topic
        await consumer.topics()  # metadata for every topic
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise KafkaError(f"control topic {topic!r} not found")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        since = int((time.time() - self._control.retention_seconds) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        for tp in tps:
            position = found.get(tp)
            if position is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, position.offset)
