"""Progress events on PROGRESS_TOPIC: queued, started, step, finished, keyed by request_id.

Fire and forget: a progress event is never awaited on the request's path and a lost one costs
nothing (results stay on the result topic, so "exactly one outcome per request" holds there).
Step events are throttled per request (the first and the last always go), sends in flight are
bounded (a broker that is away drops progress, counted, rather than queueing it in memory), and
each event carries the CloudEvents headers and the request's W3C trace context.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumer.intake.kafka_io import OutRecord, send
from consumer.ops.metrics import WorkerMetrics
from consumer.output.config import OutputConfig
from schemas.cloudevents import PROGRESS_TYPE, ce_source, cloudevent_headers
from schemas.progress import Stage, progress_event

log = logging.getLogger(__name__)

MIN_STEP_INTERVAL_SECONDS = 0.25  # at most four step events a second per request
MAX_SENDS_IN_FLIGHT = 1000
# Requests followed at once (their trace context, their last step event). A request released by
# a rebalance or abandoned at shutdown never gets its `finished`: the oldest are forgotten past
# this, so the bookkeeping stays bounded (a forgotten one only loses its trace headers).
MAX_TRACKED = 10_000

Headers = list[tuple[str, bytes]]


class ProgressReporter:
    def __init__(
        self, config: OutputConfig, producer: AIOKafkaProducer, metrics: WorkerMetrics
    ) -> None:
        self._topic = config.progress_topic
        self._source = ce_source(config.group_id)
        self._producer = producer
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        # request_id -> traceparent/tracestate to carry; oldest first
        self._trace: OrderedDict[str, Headers] = OrderedDict()
        self._last_step: OrderedDict[str, float] = OrderedDict()
        self._sends: set[asyncio.Future[None]] = set()

    def queued(self, request_id: str, trace: Headers) -> None:
        if self._topic:
            self._trace[request_id] = trace
            _bound(self._trace)
            self._emit(request_id, "queued")

    def started(self, request_ids: Iterable[str], total_steps: int) -> None:
        for request_id in request_ids:
            self._emit(request_id, "started", 0, total_steps)

    def step_from_thread(self, request_ids: list[str], step: int, total: int) -> None:
        """Called by the engine thread after each denoising step."""
        if self._topic:
            self._loop.call_soon_threadsafe(self._step, request_ids, step, total)

    def finished(self, request_id: str) -> None:
        """The last event of a request that was queued (sent before its result); nothing for
        one answered without being queued."""
        self._last_step.pop(request_id, None)
        if request_id in self._trace:
            self._emit(request_id, "finished")
            del self._trace[request_id]

    def _step(self, request_ids: list[str], step: int, total: int) -> None:
        now = time.monotonic()
        for request_id in request_ids:
            last = self._last_step.get(request_id, -1.0)
            if step in (1, total) or now - last >= MIN_STEP_INTERVAL_SECONDS:
                self._last_step[request_id] = now
                _bound(self._last_step)
                self._emit(request_id, "step", step, total)

    def _emit(
        self, request_id: str, stage: Stage, step: int | None = None, total: int | None = None
    ) -> None:
        if not self._topic:
            return
        if len(self._sends) >= MAX_SENDS_IN_FLIGHT:
            self._metrics.progress_dropped.inc()
            return
        event = progress_event(request_id, stage, step, total)
        headers = [
            *cloudevent_headers(PROGRESS_TYPE, self._source, request_id),
            *self._trace.get(request_id, []),
        ]
        record = OutRecord(
            self._topic, request_id.encode(), event.model_dump_json().encode(), headers
        )
        future = asyncio.ensure_future(self._send(record))
        self._sends.add(future)
        future.add_done_callback(self._sends.discard)

    async def _send(self, record: OutRecord) -> None:
        try:
            await send(self._producer, record)
        except KafkaError as exc:
            self._metrics.progress_dropped.inc()
            log.debug("progress event dropped: %s", type(exc).__name__)


def _bound(entries: OrderedDict[str, Any]) -> None:
    while len(entries) > MAX_TRACKED:
        entries.popitem(last=False)
