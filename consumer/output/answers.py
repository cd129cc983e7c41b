"""The one way out for a request's outcome: every result leaves through `Answers.publish`.

There, and only there, a result is checked once more (a completed result past its deadline is
flagged `late`), the request's `finished` progress event goes out before its result, the result
is published and its offset committed (acks.py: a record already answered is never answered
again), it is counted once in the metrics and logged once, and the attempt journal hears that it
runs no more (its entry goes once the commit has landed: the evidence of attempts_exhausted
stays until then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord

from consumer.generation.engine import GenerationJob
from consumer.ops.metrics import WorkerMetrics
from consumer.output.acknowledgement import Acknowledger
from consumer.output.images import is_stored_answer
from consumer.output.progress import ProgressReporter
from consumer.requests.journal import AttemptJournal
from schemas import GenerationResult, Status

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[Any, Any]
# Per-request stage timings (batches.Stages), given the time.perf_counter() of the publish.
StageClock = Callable[[float], dict[str, float]]


@dataclass(frozen=True)
class Answer:
    records: list[Record]  # the request's record, and any taken with it under the same id
    result: GenerationResult
    job: GenerationJob | None = None  # None: refused before it became a job (invalid)
    from_store: bool = False  # the images of an earlier delivery, not generated now
    stages: StageClock | None = None


@dataclass(frozen=True)
class Sent:
    """Answers whose results are published and not committed yet (Answers.send)."""

    answers: list[Answer]
    records: list[Record]  # every record of the answers
    published: list[Record]  # those to commit (a record answered before is not published again)


class Answers:
    def __init__(
        self,
        acks: Acknowledger,
        metrics: WorkerMetrics,
        progress: ProgressReporter,
        journal: AttemptJournal,
        log_prompts: bool,
    ) -> None:
        self._acks = acks
        self._metrics = metrics
        self._progress = progress
        self._journal = journal
        self._log_prompts = log_prompts

    async def publish(self, answers: Sequence[Answer], until: asyncio.Event) -> None:
        """Publish and commit every answer. Raises publishing.BrokerGaveUp when `until` is set
        while the broker is away (nothing committed, nothing counted), and Unpublishable."""
        if answers:
            await self.settle(await self.send(answers, until), until)

    async def send(self, answers: Sequence[Answer], until: asyncio.Event) -> Sent:
        """The first half of `publish`: the results published (acknowledged), not committed
        yet; `settle` does the rest. Raises as `publish`."""
        answers = [self._checked(answer) for answer in answers]
        for answer in answers:
            if answer.job is not None:
                self._progress.finished(answer.job.request_id)
        records = [record for answer in answers for record in answer.records]
        results = [answer.result for answer in answers for _ in answer.records]
        published = await self._acks.publish(records, results, until)
        return Sent(answers, records, published)

    async def settle(self, sent: Sent, until: asyncio.Event) -> None:
        """The second half: the offsets committed, then each answer counted and logged once,
        and the attempt journal told its records run no more."""
        if sent.published:
            await self._acks.commit_published(sent.published, until)
        published = time.perf_counter()
        for answer in sent.answers:
            self._count(answer)
            self._log(answer, published)
        self._journal.left(sent.records)

    def _checked(self, answer: Answer) -> Answer:
        """The deadline, checked again just before publishing: a completed result whose
        deadline has passed (its images were stored late: a store outage, a long upload) says
        so. A stored answer is the earlier answer again, never re-judged."""
        job, result = answer.job, answer.result
        if job is None or job.deadline is None or answer.from_store:
            return answer
        if result.status is Status.COMPLETED and time.time() > job.deadline:
            late = result.model_copy(update={"late": True})
            return replace(answer, result=late)
        return answer

    def _count(self, answer: Answer) -> None:
        result = answer.result
        model = answer.job.model if answer.job is not None else "none"
        self._metrics.count_result(result, model)
        if answer.from_store or is_stored_answer(result):  # looked up, or found at upload
            self._metrics.stored_answers.inc()
        elif result.audit is not None:
            seconds = float(result.audit.duration_sec)
            self._metrics.generation_seconds.labels(model).observe(seconds)

    def _log(self, answer: Answer, published: float) -> None:
        result, job = answer.result, answer.job
        if job is None:
            code = result.error.code.value if result.error is not None else None
            log.info("request rejected", extra={"request_id": result.request_id, "code": code})
            return
        stages = answer.stages(published) if answer.stages is not None else None
        timestamp = answer.records[0].timestamp
        lane = self._acks.lane(answer.records[0])
        log_result(job, result, timestamp, self._log_prompts, stages, lane)


def log_result(
    job: GenerationJob,
    result: GenerationResult,
    timestamp_ms: int | None,
    log_prompts: bool,
    stages_ms: dict[str, float] | None = None,
    lane: str | None = None,
) -> None:
    """The per-request line operators grep for, once its result is published. Prompts only when
    LOG_PROMPTS is on; `stages_ms`: where the worker's time went (batches.Stages); `lane`: the
    request's, priority or regular."""
    fields: dict[str, object] = {
        "request_id": job.request_id,
        "status": result.status.value,
        "model": job.model,
        "size": f"{job.width}x{job.height}",
        "steps": job.steps,
        "cfg": job.cfg,
        "seeds": list(job.seeds),
        "duration_sec": float(result.audit.duration_sec) if result.audit else None,
        "error": result.error.code.value if result.error else None,
    }
    if lane is not None:
        fields["lane"] = lane
    if job.model_revision is not None:  # MODEL_REVISIONS
        fields["model_revision"] = job.model_revision
    if timestamp_ms:
        fields["latency_sec"] = round(max(0.0, time.time() - timestamp_ms / 1000), 3)
    if stages_ms is not None:
        fields["stages_ms"] = stages_ms
    if log_prompts:
        fields["prompt"] = job.prompt
    logging.getLogger("consumer.requests").info("request finished", extra=fields)
