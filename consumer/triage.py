"""From polled records to work: take each record, validate it, answer invalid ones at once.

Every record polled passes through here, whatever the intake state: a record returned by a poll
is never dropped. Validation of a large event runs on a thread, so the event loop (heartbeats,
the sidecar) keeps turning while it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord, TopicPartition

from consumer.batching import group_batches
from consumer.context import RequestContext
from consumer.engine import GenerationJob, plan_job
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
from schemas.cloudevents import trace_headers

log = logging.getLogger(__name__)

# Events up to this size validate in well under a millisecond: not worth a thread hand-off.
PARSE_ON_LOOP_BYTES = 64 * 1024

Record: TypeAlias = ConsumerRecord[Any, Any]


@dataclass(frozen=True)
class Work:
    record: Record
    job: GenerationJob
    # Records with the same request_id taken together: generated once, each answered alike.
    also: list[Record] = field(default_factory=list)
    attempts: int = 0  # earlier attempts on record (attempts.py): > 0 runs alone, exclusively
    markers: tuple[str, ...] = ()  # attempt markers on record, to delete once it is answered
    marked: bool = False  # this attempt's marker is written already (at preflight)
    # time.perf_counter() when its poll returned and when its preflight ended: the first stages
    # of the per-request timings in the "request finished" log line.
    taken_at: float = 0.0
    checked_at: float = 0.0

    @property
    def exclusive(self) -> bool:
        return self.attempts > 0

    @property
    def records(self) -> list[Record]:
        return [self.record, *self.also]

    def on(self, partitions: set[TopicPartition]) -> bool:
        return any(TopicPartition(r.topic, r.partition) in partitions for r in self.records)


class Triage:
    def __init__(self, context: RequestContext) -> None:
        self._settings = context.settings
        self._limits = context.settings.request_limits()
        self._acks = context.acks
        self._metrics = context.metrics
        self._attempts = context.attempts
        self._stops = context.stops
        self._progress = context.progress

    async def __call__(
        self, records: Sequence[Record], until: asyncio.Event, idle: bool = False
    ) -> list[list[Work]]:
        """Valid requests become batches of work; the others are answered now: a rejected
        result, a dead letter, a result already in the store, `attempts_exhausted`. Records this
        member already works on (re-fetched after a rebalance) are skipped. `idle`: nothing
        runs or waits in this worker, so a lone request starts as soon as this returns."""
        taken_at = time.perf_counter()
        works: dict[str, Work] = {}
        answers: list[tuple[Record, GenerationResult]] = []
        dead: list[tuple[Record, ErrorInfo]] = []
        for record in records:
            if not self._acks.take(record):
                continue
            outcome = await self._parse(record)
            if isinstance(outcome, Accepted):
                self._add_work(works, record, outcome, taken_at)
            elif isinstance(outcome, Rejected):
                answers.append((record, outcome.result()))
                self._metrics.count_result(answers[-1][1], "none")
                log.info(
                    "request rejected",
                    extra={"request_id": outcome.request_id, "code": outcome.error.code.value},
                )
            else:
                dead.append((record, outcome.error))
        ready, answered = self._stopped(list(works.values()))
        ready, from_store = await self._preflight(ready, start_now=idle and len(ready) == 1)
        answered += from_store
        for work in ready:
            self._progress.queued(work.job.request_id, trace_headers(work.record.headers))
        answers += [(record, result) for work, result in answered for record in work.records]
        await self._acks.publish([r for r, _ in answers], [res for _, res in answers], until)
        await self._acks.dead_letters(dead, until)
        markers = [key for work, _ in from_store for key in work.markers]
        if markers:
            await asyncio.to_thread(self._attempts.clear, markers)
        return self._batches(ready)

    def _stopped(self, works: list[Work]) -> tuple[list[Work], list[tuple[Work, GenerationResult]]]:
        """Cancelled before they started, or past their deadline: answered without running."""
        codes = self._stops([work.job for work in works])
        answered = []
        for work in (w for w in works if w.job.request_id in codes):
            result = GenerationResult.failed(work.job.request_id, codes[work.job.request_id])
            log.info("request stopped before it ran", extra={"request_id": work.job.request_id})
            self._metrics.count_result(result, work.job.model)
            answered.append((work, result))
        return [w for w in works if w.job.request_id not in codes], answered

    async def _preflight(
        self, works: list[Work], start_now: bool
    ) -> tuple[list[Work], list[tuple[Work, GenerationResult]]]:
        """Split works into those to run (with their attempts on record) and those answered
        without running (from the store, or attempts exhausted). `start_now`: the works start
        as soon as this returns, so their attempt is recorded beside the lookups."""
        preflight = self._attempts.preflight
        checks = await asyncio.gather(*(preflight(w.job, start_now) for w in works))
        checked_at = time.perf_counter()
        ready, answered = [], []
        limit = self._attempts.max_attempts
        for work, check in zip(works, checks, strict=True):
            request_id, model = work.job.request_id, work.job.model
            work = replace(work, markers=check.markers, marked=check.marked, checked_at=checked_at)
            if check.stored is not None:
                log.info("answered from the store", extra={"request_id": request_id})
                self._metrics.stored_answers.inc()
                self._metrics.count_result(check.stored, model)
                answered.append((work, check.stored))
            elif limit and check.attempts >= limit:
                log.error(
                    "attempts exhausted: workers died running this request",
                    extra={"request_id": request_id, "attempts": check.attempts},
                )
                exhausted = GenerationResult.failed(request_id, ErrorCode.ATTEMPTS_EXHAUSTED)
                self._metrics.count_result(exhausted, model)
                answered.append((work, exhausted))
            else:
                ready.append(replace(work, attempts=check.attempts))
        return ready, answered

    def _batches(self, works: list[Work]) -> list[list[Work]]:
        """Compatible requests share a batch; a suspect (started before by a worker that died)
        runs alone."""
        suspects = [[work] for work in works if work.attempts]
        return suspects + group_batches(
            [work for work in works if not work.attempts],
            key=lambda w: w.job.batch_key,
            size=lambda w: w.job.num_images,
            max_images=self._settings.max_batch_size,
            cost=lambda w: w.job.cost,
            max_cost=self._settings.max_batch_cost,
        )

    def _add_work(
        self, works: dict[str, Work], record: Record, accepted: Accepted, taken_at: float
    ) -> None:
        request_id = accepted.request.request_id
        if request_id in works:  # one request_id, one set of objects: generate once
            works[request_id].also.append(record)
            return
        job = plan_job(accepted.request, self._settings.default_negative_prompt)
        job = replace(job, deadline=self._deadline(job, record))
        works[request_id] = Work(record, job, taken_at=taken_at)

    def _deadline(self, job: GenerationJob, record: Record) -> float | None:
        """The request's own deadline, or MAX_REQUEST_AGE_SECONDS after its record, if sooner."""
        max_age = self._settings.max_request_age_seconds
        aged = record.timestamp / 1000 + max_age if max_age and record.timestamp else None
        candidates = [d for d in (job.deadline, aged) if d is not None]
        return min(candidates) if candidates else None

    async def _parse(self, record: Record) -> ParseOutcome:
        if len(record.value or b"") <= PARSE_ON_LOOP_BYTES:
            return self._parse_now(record)
        return await asyncio.to_thread(self._parse_now, record)

    def _parse_now(self, record: Record) -> ParseOutcome:
        try:
            return parse_request(record.value, self._limits)
        except Exception:  # a validator bug must cost one dead letter, not the worker
            log.exception("validation raised", extra={"offset": record.offset})
            return Undeliverable(ErrorInfo.public(ErrorCode.INTERNAL_ERROR))
