"""One batch to its outcomes: generated and stored (processing.py), published and committed.

No batch ends without an outcome for each of its requests: whatever it raises (a bug, a
MemoryError while encoding) becomes a `failed` result with code `internal_error`. Only an
abandoned batch (shutdown) ends without results, uncommitted, for redelivery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from consumer.generation.engine import JobOutput
from consumer.generation.processing import BatchProcessor, OnStopped
from consumer.ops.metrics import WorkerMetrics
from consumer.output.answers import Answer, Answers
from consumer.output.outbox import Outbox
from consumer.output.progress import ProgressReporter
from consumer.output.publishing import BrokerGaveUp, Unpublishable
from consumer.requests.journal import AttemptJournal
from consumer.requests.triage import Record, Work
from consumer.stoppable import Abandoned
from schemas import ErrorCode, GenerationResult

log = logging.getLogger(__name__)


@dataclass
class Stages:
    """time.perf_counter() at the steps of a batch, for the per-request stage timings of the
    "request finished" log line (where an idle request's milliseconds go)."""

    started: float  # the batch task began (a slot was free)
    engine: float = 0.0  # the batch is on record (journal.py): the engine call is asked for
    generated: float = 0.0  # the engine call returned

    def milliseconds(self, work: Work, stored: float, published: float) -> dict[str, float]:
        """preflight: poll returned -> lookups done; queued: -> a slot took it; record: ->
        the batch on record in the journal; generate: the engine call (its hand-offs
        and any wait for the engine thread included); store: encoding and upload; publish: the
        result acknowledged and the offset committed."""
        checked = work.checked_at or self.started  # 0.0: not set (work built elsewhere)
        taken = work.taken_at or checked
        engine = self.engine or self.started
        generated = self.generated or engine
        points = [taken, checked, self.started, engine, generated, stored, published]
        names = ("preflight", "queued", "record", "generate", "store", "publish")
        return {
            name: round(max(0.0, end - begin) * 1000, 1)
            for name, begin, end in zip(names, points, points[1:], strict=False)
        }


class _Countdown:
    """Calls `done` once `tick` has been called `count` times."""

    def __init__(self, count: int, done: Callable[[], None]) -> None:
        self._left = count
        self._done = done

    def tick(self) -> None:
        self._left -= 1
        if self._left == 0:
            self._done()


class BatchRunner:
    def __init__(
        self,
        answers: Answers,
        metrics: WorkerMetrics,
        journal: AttemptJournal,
        progress: ProgressReporter,
        processor: BatchProcessor,
        abandoning: asyncio.Event,
        fail: Callable[[str], None],
    ) -> None:
        self._outbox = Outbox(answers, until=abandoning)  # publish retries give up at the deadline
        self._metrics = metrics
        self._journal = journal
        self._engine_claims = 0  # batches recorded for the engine whose call has not returned
        self._progress = progress
        self._processor = processor
        self._fail = fail

    async def run(self, batch: list[Work], stored: Callable[[], None] = lambda: None) -> None:
        """Generate the batch, then store and publish each request's result as soon as its own
        images are stored (not when the whole batch is). A request stopped during the engine
        call is answered at that step, and the others go on. `stored` is called once every
        request of the batch is past its upload (the worker's slot is free then)."""
        self._metrics.batch_size.observe(sum(w.job.num_images for w in batch))
        generated: Sequence[JobOutput | GenerationResult]
        by_id = {w.job.request_id: w for w in batch}
        records = [(r, w.job.request_id) for w in batch for r in w.records]
        clock = Stages(started=time.perf_counter())
        early: dict[str, asyncio.Task[None]] = {}  # stopped mid-call: answered at once

        def on_stopped(codes: Mapping[str, ErrorCode]) -> None:  # on the event loop
            for request_id, code in codes.items():
                work = by_id[request_id]
                result = GenerationResult.failed(request_id, code)
                answer = self._answer(work, result, clock)
                early[request_id] = asyncio.create_task(self._publish(answer))

        try:
            generated = await self._generate(batch, records, clock, on_stopped)
            clock.generated = time.perf_counter()
        except Abandoned:
            log.warning("abandoned %d request(s); they will be delivered again", len(batch))
            await asyncio.gather(*early.values())
            left = [w for w in batch if w.job.request_id not in early]
            self._journal.left(r for w in left for r in w.records)  # not a crash
            return
        except Exception:
            generated = self._internal_errors(batch)
        countdown = _Countdown(len(batch), stored)
        finishing = []
        for work, outcome in zip(batch, generated, strict=True):
            if work.job.request_id in early:  # answered at its step; its images (if any) dropped
                countdown.tick()
                continue
            finishing.append(self._finish(work, outcome, clock, countdown.tick))
        await asyncio.gather(*early.values(), *finishing)

    async def _generate(
        self,
        batch: list[Work],
        records: list[tuple[Record, str]],
        clock: Stages,
        on_stopped: OnStopped,
    ) -> Sequence[JobOutput | GenerationResult]:
        """On record before the engine call (journal.py): NEXT while a batch ahead of it holds
        the engine (it is written meanwhile), else ENGINE; NEXT turns ENGINE once the engine
        takes it. Then the engine call."""
        ahead = self._engine_claims > 0
        self._engine_claims += 1
        try:
            await self._journal.recorded(records, engine_busy=ahead)
            self._progress.started([w.job.request_id for w in batch], batch[0].job.denoising_steps)
            clock.engine = time.perf_counter()
            return await self._processor.generate(
                [w.job for w in batch],
                self._progress.step_from_thread,
                on_stopped,
                on_start=partial(self._journal.engine_started, [r for r, _ in records]),
            )
        finally:
            self._engine_claims -= 1

    async def _finish(
        self,
        work: Work,
        outcome: JobOutput | GenerationResult,
        clock: Stages,
        stored_one: Callable[[], None],
    ) -> None:
        """Store and publish one request's outcome."""
        try:
            result = await self._processor.finish(outcome, fresh=work.fresh)
        except Abandoned:
            log.warning("abandoned %s; it will be delivered again", work.job.request_id)
            self._journal.left(work.records)  # not a crash
            return
        except Exception:
            (result,) = self._internal_errors([work])
        finally:
            stored_one()
        await self._publish(self._answer(work, result, clock))

    def _answer(self, work: Work, result: GenerationResult, clock: Stages) -> Answer:
        stages = partial(clock.milliseconds, work, time.perf_counter())
        return Answer(work.records, result, work.job, stages=stages)

    async def _publish(self, answer: Answer) -> None:
        try:
            await self._outbox.publish(answer)
        except BrokerGaveUp:
            log.warning("broker away at shutdown: %s left for redelivery", answer.result.request_id)
        except Unpublishable as exc:
            self._fail(f"the broker refuses every record: {exc}")

    def _internal_errors(self, batch: list[Work]) -> list[GenerationResult]:
        """Whatever a batch raises becomes internal_error results: no request goes unanswered."""
        ids = [w.job.request_id for w in batch]
        log.exception("batch failed unexpectedly", extra={"request_ids": ids})
        self._metrics.internal_errors.inc()
        return [GenerationResult.failed(i, ErrorCode.INTERNAL_ERROR) for i in ids]
