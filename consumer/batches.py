"""One batch to its outcomes: generate and store (processing.py), then publish and commit.

No batch ends without an outcome for each of its requests: whatever it raises (a bug, a
MemoryError while encoding) becomes a `failed` result with code `internal_error`. Only an
abandoned batch (shutdown) ends without results, uncommitted, for redelivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from consumer.acks import Acknowledger
from consumer.attempts import AttemptLog
from consumer.logs import log_result
from consumer.metrics import WorkerMetrics
from consumer.processing import Abandoned, BatchProcessor
from consumer.publishing import BrokerGaveUp, Unpublishable
from consumer.settings import Settings
from consumer.triage import Work
from schemas import ErrorCode, GenerationResult

log = logging.getLogger(__name__)


class BatchRunner:
    def __init__(
        self,
        settings: Settings,
        processor: BatchProcessor,
        acks: Acknowledger,
        metrics: WorkerMetrics,
        abandoning: asyncio.Event,
        fail: Callable[[str], None],
        attempts: AttemptLog,
    ) -> None:
        self._settings = settings
        self._processor = processor
        self._acks = acks
        self._metrics = metrics
        self._abandoning = abandoning  # set at the drain deadline: publish retries give up
        self._fail = fail
        self._attempts = attempts

    async def run(self, batch: list[Work]) -> None:
        self._metrics.batch_size.observe(sum(w.job.num_images for w in batch))
        ids = [w.job.request_id for w in batch]
        try:
            await asyncio.to_thread(self._record_attempts, batch)  # durable before the engine
            results = await self._processor.run([w.job for w in batch])
        except Abandoned:
            log.warning("abandoned %d request(s); they will be delivered again", len(batch))
            return
        except Exception:
            log.exception("batch failed unexpectedly", extra={"request_ids": ids})
            self._metrics.internal_errors.inc()
            results = [GenerationResult.failed(i, ErrorCode.INTERNAL_ERROR) for i in ids]
        records, outcomes = [], []
        for work, result in zip(batch, results, strict=True):
            self._observe(work, result)
            records += work.records
            outcomes += [result] * len(work.records)
        # Shielded: a cancelled drain must not interrupt a publish between send and commit.
        try:
            await asyncio.shield(self._acks.publish(records, outcomes, until=self._abandoning))
        except BrokerGaveUp:
            log.warning("broker away at shutdown: %d result(s) left for redelivery", len(batch))
            return
        except Unpublishable as exc:
            self._fail(f"the broker refuses every record: {exc}")
            return
        await asyncio.to_thread(self._attempts.clear, ids)

    def _record_attempts(self, batch: list[Work]) -> None:
        for work in batch:
            self._attempts.record(work.job.request_id, work.attempts + 1)

    def _observe(self, work: Work, result: GenerationResult) -> None:
        model = work.job.model
        self._metrics.count_result(result, model)
        if result.audit is not None:
            seconds = float(result.audit.duration_sec)
            self._metrics.generation_seconds.labels(model).observe(seconds)
        log_result(work.job, result, work.record.timestamp, self._settings.log_prompts)
