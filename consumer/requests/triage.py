"""From polled records to work: take each record, gather the facts about it, let the one
decision (decision.py) say its fate, answer at once what does not run.

Every record polled passes through here, whatever the intake state: a record returned by a poll
is never dropped. Validation of a large event runs on a thread, so the event loop (heartbeats,
the sidecar) keeps turning while it runs. The store is looked at (attempts.py) for every valid
request before its fate is decided, cancelled or expired ones included: a request already
answered stays answered, and an earlier crash's attempt markers are forgotten with any answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord, TopicPartition

from consumer.generation.batch_queue import group_batches
from consumer.generation.engine import GenerationJob, plan_job
from consumer.generation.processing import StopCheck
from consumer.intake.clocks import record_time
from consumer.output.acknowledgement import Acknowledger
from consumer.output.answers import Answer, Answers
from consumer.output.images import request_digest
from consumer.output.progress import ProgressReporter
from consumer.requests.attempts import AttemptLog, Preflight
from consumer.requests.config import TriageConfig
from consumer.requests.decision import Action, Decision, Facts, Stored, decide
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
    # Records with the same request_id and parameters taken together: generated once, each
    # answered alike.
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


@dataclass
class _Poll:
    """What one poll's records became before their fates are decided."""

    works: dict[str, Work] = field(default_factory=dict)  # valid, one per request_id
    conflicts: list[Work] = field(default_factory=list)  # its id, other parameters
    answers: list[Answer] = field(default_factory=list)  # answered without running
    dead: list[tuple[Record, ErrorInfo]] = field(default_factory=list)


class Triage:
    def __init__(
        self,
        config: TriageConfig,
        acks: Acknowledger,
        answers: Answers,
        attempts: AttemptLog,
        stops: StopCheck,
        progress: ProgressReporter,
    ) -> None:
        self._config = config
        self._limits = config.limits
        self._acks = acks
        self._answers = answers
        self._attempts = attempts
        self._stops = stops
        self._progress = progress

    async def __call__(
        self, records: Sequence[Record], until: asyncio.Event, idle: bool = False
    ) -> list[list[Work]]:
        """Valid requests to run become batches of work; every other record is answered now (a
        refusal, a stop, a result from the store) or dead-lettered. Records this member already
        works on (re-fetched after a rebalance) are skipped. `idle`: nothing runs or waits in
        this worker, so a lone request starts as soon as this returns."""
        taken_at = time.perf_counter()
        poll = _Poll()
        for record in records:
            if not self._acks.take(record):
                continue
            outcome = await self._parse(record)
            if isinstance(outcome, Accepted):
                self._add_work(poll, record, outcome, taken_at)
            elif isinstance(outcome, Rejected):
                poll.answers.append(Answer([record], outcome.result()))
            else:
                poll.dead.append((record, outcome.error))
        ready = await self._decide(poll, idle)
        for work in ready:
            self._progress.queued(work.job.request_id, trace_headers(work.record.headers))
        await self._answers.publish(poll.answers, until)
        await self._acks.dead_letters(poll.dead, until)
        return self._batches(ready)

    async def _decide(self, poll: _Poll, idle: bool) -> list[Work]:
        """The facts of every valid request (stops, then one store lookup each, side by side),
        and its decision: the works to run are returned, the others' answers added to `poll`."""
        candidates = [(work, False) for work in poll.works.values()]
        candidates += [(work, True) for work in poll.conflicts]
        stops = self._stops([work.job for work, _ in candidates])
        # A lone request on an idle worker starts as soon as this returns: its attempt is
        # recorded beside the lookup (attempts.py).
        start_now = idle and len(candidates) == 1 and not stops
        preflight = self._attempts.preflight
        checks = await asyncio.gather(*(preflight(w.job, start_now) for w, _ in candidates))
        checked_at = time.perf_counter()
        ready = []
        for (work, conflict), check in zip(candidates, checks, strict=True):
            work = replace(
                work,
                attempts=check.attempts,
                markers=check.markers,
                marked=check.marked,
                checked_at=checked_at,
            )
            facts = self._facts(check, stops.get(work.job.request_id), conflict)
            decision = decide(facts)
            if decision.action in (Action.RUN_ALONE, Action.RUN_BATCHED):
                ready.append(work)
            else:
                poll.answers.append(self._answer(work, check, decision))
        return ready

    def _facts(self, check: Preflight, stop: ErrorCode | None, conflict: bool) -> Facts:
        stored = check.stored
        if stored is Stored.SAME and stop is None and not self._config.reuse_stored_images:
            stored = Stored.NOTHING  # REUSE_STORED_IMAGES=false: generated again (same bytes)
        return Facts(
            duplicate_conflict=conflict,
            stored=stored,
            stop=stop,
            attempts=check.attempts,
            max_attempts=self._attempts.max_attempts,
        )

    def _answer(self, work: Work, check: Preflight, decision: Decision) -> Answer:
        job = work.job
        if decision.action is Action.ANSWER_FROM_STORE and check.answer is not None:
            return Answer(work.records, check.answer, job, work.markers, from_store=True)
        code = decision.code or ErrorCode.INTERNAL_ERROR
        result = GenerationResult.failed(job.request_id, code)
        extra = {"request_id": job.request_id, "rule": decision.rule}
        if code is ErrorCode.ATTEMPTS_EXHAUSTED:
            log.error("attempts exhausted: workers died running this request", extra=extra)
        else:
            log.info("request answered without running", extra=extra)
        own = work.markers[-1:] if work.marked else ()  # this delivery's, written at preflight
        earlier = work.markers[: len(work.markers) - len(own)]
        if code is ErrorCode.REQUEST_ID_CONFLICT:  # the markers on record are another's
            return Answer(work.records, result, job, own)
        if code is ErrorCode.ATTEMPTS_EXHAUSTED:  # the crashes on record are the evidence
            return Answer(work.records, result, job, own, evidence=earlier)
        return Answer(work.records, result, job, work.markers)

    def _batches(self, works: list[Work]) -> list[list[Work]]:
        """Compatible requests share a batch; a suspect (started before by a worker that died)
        runs alone."""
        suspects = [[work] for work in works if work.attempts]
        return suspects + group_batches(
            [work for work in works if not work.attempts],
            key=lambda w: w.job.batch_key,
            size=lambda w: w.job.num_images,
            max_images=self._config.max_batch_size,
            cost=lambda w: w.job.cost,
            max_cost=self._config.max_batch_cost,
        )

    def _add_work(self, poll: _Poll, record: Record, accepted: Accepted, taken_at: float) -> None:
        """One work per request_id: a record with the same id and parameters joins it
        (generated once, answered alike); one with other parameters is a conflict."""
        config = self._config
        job = plan_job(accepted.request, config.default_negative_prompt, config.model_revisions)
        job = replace(job, synthetic=config.synthetic, deadline=self._deadline(job, record))
        work = Work(record, job, taken_at=taken_at)
        first = poll.works.get(job.request_id)
        if first is None:
            poll.works[job.request_id] = work
        elif request_digest(first.job) == request_digest(job):
            first.also.append(record)
        else:
            poll.conflicts.append(work)

    def _deadline(self, job: GenerationJob, record: Record) -> float | None:
        """The request's own deadline, or MAX_REQUEST_AGE_SECONDS after its record, if sooner."""
        max_age, skew = self._config.max_request_age_seconds, self._config.clock_skew_seconds
        aged = None
        if max_age and record.timestamp:
            written = record_time(record.timestamp, record.timestamp_type, skew, time.time())
            aged = written + max_age
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
