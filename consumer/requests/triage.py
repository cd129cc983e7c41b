"""From polled records to work: take each record, gather the facts about it, let the one
decision (decision.py) say its fate, answer at once what does not run.

Every record polled passes through here, whatever the intake state: a record returned by a poll
is never dropped. Validation of a large event runs on a thread, so the event loop (heartbeats,
the sidecar) keeps turning while it runs. The store is looked at (lookup.py) before a valid
request's fate is decided when any worker may have run it before (journal.py), and for every
cancelled or expired one: a request already answered stays answered. A fresh request that runs is
not looked up: its images are created, never overwritten (uploads.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
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
from consumer.requests.config import TriageConfig
from consumer.requests.decision import Action, Decision, Facts, Stored, decide
from consumer.requests.journal import AttemptJournal
from consumer.requests.lookup import NOT_LOOKED_UP, Found, StoreLookup
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
    attempts: int = 0  # crashes on record (journal.py): > 0 runs alone, exclusively
    fresh: bool = False  # no worker ran it before: not looked up, its images are created
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
        lookup: StoreLookup,
        journal: AttemptJournal,
        stops: StopCheck,
        progress: ProgressReporter,
        step: Callable[[], None] = lambda: None,
    ) -> None:
        """`step`: the intake loop is alive (while waiting on another worker's journal)."""
        self._config = config
        self._limits = config.limits
        self._acks = acks
        self._answers = answers
        self._lookup = lookup
        self._journal = journal
        self._stops = stops
        self._progress = progress
        self._step = step

    async def __call__(self, records: Sequence[Record], until: asyncio.Event) -> list[list[Work]]:
        """Valid requests to run become batches of work; every other record is answered now (a
        refusal, a stop, a result from the store) or dead-lettered. Records this member already
        works on (re-fetched after a rebalance) are skipped."""
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
        ready = await self._decide(poll, until)
        for work in ready:
            self._progress.queued(work.job.request_id, trace_headers(work.record.headers))
        await self._answers.publish(poll.answers, until)
        await self._acks.dead_letters(poll.dead, until)
        return self._batches(ready)

    async def _decide(self, poll: _Poll, until: asyncio.Event) -> list[Work]:
        """The facts of every valid request (stops; what the store holds, where any worker may
        have run it or it is stopped; crashes on record), and its decision: the works to run are
        returned, the others' answers added to `poll`."""
        candidates = [(work, False) for work in poll.works.values()]
        candidates += [(work, True) for work in poll.conflicts]
        records = [record for work, _ in candidates for record in work.records]
        await self._journal.ready({(record.topic, record.partition) for record in records})
        busy = self._journal.busy_elsewhere(records)
        if busy:  # a live worker still runs them (past its revoke limit): not a crash
            await self._journal.wait_released(busy, until, self._step)
        stops = self._stops([work.job for work, _ in candidates])
        looked_up = [
            conflict
            or work.job.request_id in stops
            or any(self._journal.may_have_run(record) for record in work.records)
            for work, conflict in candidates
        ]
        finds = await self._finds([work for work, _ in candidates], looked_up)
        checked_at = time.perf_counter()
        ready = []
        for (work, conflict), look, found in zip(candidates, looked_up, finds, strict=True):
            attempts = max(self._journal.attempts(record) for record in work.records)
            work = replace(work, attempts=attempts, fresh=not look, checked_at=checked_at)
            facts = self._facts(found, attempts, stops.get(work.job.request_id), conflict)
            decision = decide(facts)
            if decision.action in (Action.RUN_ALONE, Action.RUN_BATCHED):
                ready.append(work)
            else:
                poll.answers.append(self._answer(work, found, decision))
        return ready

    async def _finds(self, works: list[Work], looked_up: list[bool]) -> list[Found]:
        """What the store holds for each work to look up (side by side), NOT_LOOKED_UP for the
        others (no task each: on a backlog of fresh requests, that is every one)."""
        wanted = [work.job for work, look in zip(works, looked_up, strict=True) if look]
        found = iter(await asyncio.gather(*map(self._lookup, wanted)) if wanted else [])
        return [next(found) if look else NOT_LOOKED_UP for look in looked_up]

    def _facts(self, found: Found, attempts: int, stop: ErrorCode | None, conflict: bool) -> Facts:
        stored = found.stored
        if stored is Stored.SAME and stop is None and not self._config.reuse_stored_images:
            stored = Stored.NOTHING  # REUSE_STORED_IMAGES=false: generated again (same bytes)
        return Facts(
            duplicate_conflict=conflict,
            stored=stored,
            stop=stop,
            attempts=attempts,
            max_attempts=self._config.max_attempts,
        )

    def _answer(self, work: Work, found: Found, decision: Decision) -> Answer:
        job = work.job
        if decision.action is Action.ANSWER_FROM_STORE and found.answer is not None:
            return Answer(work.records, found.answer, job, from_store=True)
        code = decision.code or ErrorCode.INTERNAL_ERROR
        result = GenerationResult.failed(job.request_id, code)
        extra = {"request_id": job.request_id, "rule": decision.rule}
        if code is ErrorCode.ATTEMPTS_EXHAUSTED:
            log.error("attempts exhausted: workers died running this request", extra=extra)
        else:
            log.info("request answered without running", extra=extra)
        return Answer(work.records, result, job)

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
