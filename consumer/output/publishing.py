"""Getting records onto the broker: retry what can heal, fall back for what cannot.

A transient error (the broker away, a leader moving, a timeout) is retried with capped backoff
for as long as the caller's `until` event is not set. An error that no retry fixes (the record is
too large, the topic is invalid or not writable) is not retried: the next fallback of that
record is tried instead (a minimal result, then a dead letter), with a log line and a metric.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)

from consumer.intake.kafka_io import OutRecord, send_all
from consumer.ops.metrics import WorkerMetrics
from consumer.stoppable import Backoff, StopRequested

log = logging.getLogger(__name__)

REFUSED_FOR_GOOD: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    InvalidTopicError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)
# An attempt started after `until` is set (a last try while stopping) gets this long.
LAST_ATTEMPT_SECONDS = 2.0


class BrokerGaveUp(Exception):
    """The worker stopped while the broker was away: leave these records uncommitted."""


class Unpublishable(Exception):
    """The broker refused a record and every fallback for good: nothing can carry its outcome."""


@dataclass(frozen=True)
class Delivery:
    """A record, then the fallbacks to try in order if the broker refuses it for good, each
    built only when it is tried (almost never: building every fallback of every result cost
    the event path a sixth of its CPU)."""

    label: str  # request id or source offset, for logs
    forms: tuple[Callable[[], OutRecord], ...]

    def form(self, stage: int) -> OutRecord:
        return self.forms[stage]()


class Publisher:
    def __init__(
        self,
        producer: AIOKafkaProducer,
        metrics: WorkerMetrics,
        on_retry: Callable[[], None] = lambda: None,
    ) -> None:
        self._producer = producer
        self._metrics = metrics
        self._on_retry = on_retry  # tells the watchdog the caller is waiting, not hung

    async def deliver(self, deliveries: Sequence[Delivery], until: asyncio.Event) -> None:
        """Every delivery acknowledged (in one of its forms). Raises BrokerGaveUp when `until`
        is set while the broker is away, Unpublishable when a record has no form left."""
        stage = dict.fromkeys(range(len(deliveries)), 0)
        backoff = Backoff(0.5, 10.0)
        while stage:
            pending = list(stage)
            records = [deliveries[i].form(stage[i]) for i in pending]
            outcomes = await self._attempt(records, until)
            transient = False
            for i, outcome in zip(pending, outcomes, strict=True):
                if outcome is None:
                    del stage[i]
                elif isinstance(outcome, REFUSED_FOR_GOOD):
                    stage[i] = self._fall_back(deliveries[i], stage[i], outcome)
                elif isinstance(outcome, KafkaError):
                    transient = True
                else:
                    raise outcome
            if transient:
                await self._back_off(backoff, until)

    def _fall_back(self, delivery: Delivery, stage: int, error: KafkaError) -> int:
        record = delivery.form(stage)
        self._metrics.publish_refused.labels(record.topic).inc()
        log.error(
            "broker refused a record for good (%s)",
            type(error).__name__,
            extra={"record": delivery.label, "topic": record.topic, "stage": stage},
        )
        if stage + 1 >= len(delivery.forms):
            raise Unpublishable(f"{delivery.label}: every form refused ({type(error).__name__})")
        return stage + 1

    async def _back_off(self, backoff: Backoff, until: asyncio.Event) -> None:
        self._metrics.publish_retries.inc()
        self._on_retry()
        log.warning("publish failed; retrying in %.1fs", backoff.delay)
        try:
            await backoff.wait(until)
        except StopRequested:
            raise BrokerGaveUp from None

    async def _attempt(
        self, records: list[OutRecord], until: asyncio.Event
    ) -> list[Exception | None]:
        """Send all at once, then wait for every acknowledgement (one round trip, not one per
        record); abandoned as soon as `until` is set."""
        sends = asyncio.ensure_future(send_all(self._producer, records))
        waiting: set[asyncio.Future[Any]] = {sends}
        if until.is_set():
            done, _ = await asyncio.wait(waiting, timeout=LAST_ATTEMPT_SECONDS)
        else:
            stopper = asyncio.ensure_future(until.wait())
            done, _ = await asyncio.wait({*waiting, stopper}, return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
        if sends not in done:
            sends.cancel()
            raise BrokerGaveUp
        return list(sends.result())
