"""Progress events on PROGRESS_TOPIC: queued, started, step, finished, keyed by request_id.

Fire and forget: a progress event is never awaited on the request's path and a lost one costs
nothing (results stay on the result topic, so "exactly one outcome per request" holds there).
Coalesced, as the contract allows: a request's event waits PROGRESS_INTERVAL_SECONDS and only
its newest one then goes, so a request gets at most one event per interval; `finished` goes at
once (before its result), and only after an event that went: a request answered within the
interval of being queued gets no progress event, its result being the first thing to show. On a
backlog of fast requests, three events per request besides the result cost the worker a quarter
of its rate for nothing a display could show. Sends in flight are bounded (a broker that is away
drops progress, counted, rather than queueing it in memory), and each event carries the
CloudEvents headers and the request's W3C trace context.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from consumer.intake.kafka_io import OutRecord, send
from consumer.ops.metrics import WorkerMetrics
from consumer.output.config import OutputConfig
from schemas.cloudevents import PROGRESS_TYPE, ce_source, cloudevent_headers
from schemas.progress import Stage, progress_event

log = logging.getLogger(__name__)

MAX_SENDS_IN_FLIGHT = 1000
# Requests followed at once (their trace context, whether an event of theirs went). A request
# released by a rebalance or abandoned at shutdown never gets its `finished`: the oldest are
# forgotten past this, so the bookkeeping stays bounded (a forgotten one loses its trace headers
# and its `finished`).
MAX_TRACKED = 10_000

Headers = list[tuple[str, bytes]]


class _Event(NamedTuple):
    """A progress event before it is stamped and sent."""

    stage: Stage
    step: int | None
    total: int | None


FINISHED = _Event("finished", None, None)


@dataclass
class _Followed:
    trace: Headers  # traceparent/tracestate to carry
    shown: bool = False  # an event of this request went


class ProgressReporter:
    def __init__(
        self, config: OutputConfig, producer: AIOKafkaProducer, metrics: WorkerMetrics
    ) -> None:
        self._topic = config.progress_topic
        self._interval = config.progress_interval_seconds
        self._source = ce_source(config.group_id)
        self._producer = producer
        self._metrics = metrics
        self._loop = asyncio.get_running_loop()
        self._followed: OrderedDict[str, _Followed] = OrderedDict()  # queued ones, oldest first
        # request_id -> its newest event not sent yet, and when it goes (in that order)
        self._held: dict[str, tuple[_Event, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._sends: set[asyncio.Future[None]] = set()

    def queued(self, request_id: str, trace: Headers) -> None:
        if self._topic:
            self._followed[request_id] = _Followed(trace)
            while len(self._followed) > MAX_TRACKED:
                self._followed.popitem(last=False)
            self._hold(request_id, _Event("queued", None, None))

    def started(self, request_ids: Iterable[str], total_steps: int) -> None:
        for request_id in request_ids:
            self._hold(request_id, _Event("started", 0, total_steps))

    def step_from_thread(self, request_ids: list[str], step: int, total: int) -> None:
        """Called by the engine thread after each denoising step."""
        if self._topic:
            self._loop.call_soon_threadsafe(self._step, request_ids, step, total)

    def finished(self, request_id: str) -> None:
        """The last event of a queued request, sent at once (before its result) in place of
        any still held, when an event of it went before; else nothing."""
        self._held.pop(request_id, None)
        followed = self._followed.pop(request_id, None)
        if followed is not None and followed.shown:
            self._emit(request_id, FINISHED, followed)

    def _step(self, request_ids: list[str], step: int, total: int) -> None:
        for request_id in request_ids:
            self._hold(request_id, _Event("step", step, total))

    def _hold(self, request_id: str, event: _Event) -> None:
        """Keep `event` as the request's newest; it goes an interval after the first event
        held since the last one went."""
        if not self._topic:
            return
        held = self._held.get(request_id)
        if held is not None:  # keeps its place and its time
            self._held[request_id] = (event, held[1])
            return
        due = self._loop.time() + self._interval
        self._held[request_id] = (event, due)
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._send_due)

    def _send_due(self) -> None:
        """Send the held events whose time has come (the oldest first), then wait for the next."""
        self._timer = None
        now = self._loop.time()
        while self._held:
            request_id, (event, due) = next(iter(self._held.items()))
            if due > now:
                self._timer = self._loop.call_at(due, self._send_due)
                return
            del self._held[request_id]
            self._emit(request_id, event, self._followed.get(request_id))

    def _emit(self, request_id: str, event: _Event, followed: _Followed | None) -> None:
        if len(self._sends) >= MAX_SENDS_IN_FLIGHT:
            self._metrics.progress_dropped.inc()
            return
        body = progress_event(request_id, event.stage, event.step, event.total)
        headers = cloudevent_headers(PROGRESS_TYPE, self._source, request_id)
        if followed is not None:
            headers += followed.trace
            followed.shown = True
        value = body.model_dump_json().encode()
        record = OutRecord(self._topic, request_id.encode(), value, headers)
        future = asyncio.ensure_future(self._send(record))
        self._sends.add(future)
        future.add_done_callback(self._sends.discard)

    async def _send(self, record: OutRecord) -> None:
        try:
            await send(self._producer, record)
        except KafkaError as exc:
            self._metrics.progress_dropped.inc()
            log.debug("progress event dropped: %s", type(exc).__name__)
