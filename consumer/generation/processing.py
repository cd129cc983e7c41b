"""One batch, from jobs to results: init images read, generation on the engine thread, then each
request's images encoded and uploaded on I/O threads (uploads.py), with retries for a store that
went away. Nothing here touches Kafka."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from consumer.generation.engine import (
    Engine,
    EngineError,
    GenerationJob,
    JobOutput,
    RequestsStopped,
    StepHook,
)
from consumer.generation.inputs import InputReader, by_batch_key, prepare_batch
from consumer.output.uploads import ImageUploader, StoreOutage
from consumer.stoppable import Abandoned
from schemas import ErrorCode, GenerationResult
from storage import ImageStore, StorageError
from storage.png import DEFAULT_COMPRESS_LEVEL

log = logging.getLogger(__name__)


# Which of some jobs must stop now, and why (StopBoard.due).
StopCheck = Callable[[Sequence[GenerationJob]], Mapping[str, ErrorCode]]
# Called on the engine thread after each denoising step with the request ids still running.
StepProgress = Callable[[list[str], int, int], None]
# Called on the event loop with the requests of a running batch stopped at a step boundary (and
# why), while the rest of the batch goes on: they are answered at once, their images dropped.
OnStopped = Callable[[Mapping[str, ErrorCode]], None]


def _request_id(outcome: JobOutput | GenerationResult) -> str:
    return outcome.job.request_id if isinstance(outcome, JobOutput) else outcome.request_id or ""


@dataclass
class _Calls:
    """What one batch's engine calls report to (and every stop of the batch, across its calls:
    an out-of-memory split makes several)."""

    on_step: StepProgress | None
    on_stopped: OnStopped
    on_start: Callable[[], None]
    stopped: dict[str, ErrorCode] = field(default_factory=dict)


def _in_order(
    jobs: Sequence[GenerationJob],
    failed: Mapping[str, ErrorCode],
    outcomes: Mapping[str, JobOutput | GenerationResult],
) -> list[JobOutput | GenerationResult]:
    """Each job's outcome in the jobs' order: its failure code's result where it has one."""
    return [
        GenerationResult.failed(job.request_id, failed[job.request_id])
        if job.request_id in failed
        else outcomes[job.request_id]
        for job in jobs
    ]


class BatchProcessor:
    def __init__(
        self,
        engine: Engine,
        store: ImageStore,
        *,
        key_prefix: str,
        timeout_seconds: float,
        max_backoff_seconds: float = 10.0,
        png_compress_level: int = DEFAULT_COMPRESS_LEVEL,
        engine_thread: ThreadPoolExecutor,
        io_threads: ThreadPoolExecutor,
        on_storage_retry: Callable[[], None] = lambda: None,
        stops: StopCheck = lambda jobs: {},
        inputs: InputReader | None = None,
        reuse_stored: bool = True,
    ) -> None:
        """`stops`: which of some jobs must stop now (cancelled, past their deadline); asked
        before each engine call and after each of its denoising steps. `inputs`: reads the init
        images of image-to-image jobs (contract 1.2; default limits when None). `reuse_stored`
        (REUSE_STORED_IMAGES): a request found stored at upload is answered from the store;
        off, its images are written again over the same ones."""
        self._inputs = inputs or InputReader(store)
        self._engine = engine
        self._stops = stops
        self._timeout = timeout_seconds
        self._engine_thread = engine_thread
        self._io_threads = io_threads
        self._outage = StoreOutage(max_backoff_seconds, on_storage_retry)
        self._uploader = ImageUploader(
            store, key_prefix, png_compress_level, io_threads, self._outage, reuse_stored
        )

    def abandon(self) -> None:
        """The engine stops at its next denoising step, store retries stop at once."""
        self._outage.abandon()

    @property
    def abandoned(self) -> bool:
        return self._outage.abandoned

    async def generate(
        self,
        jobs: Sequence[GenerationJob],
        on_step: StepProgress | None = None,
        on_stopped: OnStopped = lambda codes: None,
        on_start: Callable[[], None] = lambda: None,
    ) -> list[JobOutput | GenerationResult]:
        """Images for every job, in order, or its failed result. One engine call; out of memory
        on a batch splits it in halves and tries again, down to single requests (a request's
        images always come from one call). A request cancelled or past its deadline before the
        call gets its stop result here; one stopped during the call is handed to `on_stopped`
        at that step and the call goes on for the others (its images are dropped: what a stop
        wastes is the rest of its own slot in the batch). Raises Abandoned when the worker
        gives up. `on_start` is called on the event loop when the engine thread begins each of
        the batch's calls."""
        calls = _Calls(on_step, on_stopped, on_start)
        ready, refused = await self._read_inputs(list(jobs))
        outcomes: dict[str, JobOutput | GenerationResult] = {}
        # Sized by their inputs, image-to-image jobs may need more than one call (one per size).
        for group in by_batch_key(ready):
            for outcome in await self._generate(group, calls):
                outcomes[_request_id(outcome)] = outcome
        return _in_order(jobs, refused, outcomes)

    async def _read_inputs(
        self, jobs: list[GenerationJob]
    ) -> tuple[list[GenerationJob], dict[str, ErrorCode]]:
        """The batch's init images read and its jobs sized (inputs.py), retried while the store
        is away; the jobs whose input is refused, with the code."""
        try:
            return await self._outage.retry(
                lambda: prepare_batch(self._inputs, jobs, self._io_threads)
            )
        except StorageError as exc:
            log.error("store refused an init image read: %s", exc)
            failed = {j.request_id: ErrorCode.STORAGE_FAILED for j in jobs if j.init_image}
            return [job for job in jobs if not job.init_image], failed

    async def _generate(
        self, jobs: list[GenerationJob], calls: _Calls
    ) -> list[JobOutput | GenerationResult]:
        stopped = calls.stopped
        due = self._stops([job for job in jobs if job.request_id not in stopped])
        if due:
            log.info("requests stopped before their engine call", extra={"request_ids": list(due)})
        stopped.update(due)
        running = [job for job in jobs if job.request_id not in stopped]
        outcomes: dict[str, JobOutput | GenerationResult] = {}
        if running:
            outputs = await self._engine_call(running, calls)
            outcomes = {_request_id(outcome): outcome for outcome in outputs}
        return _in_order(jobs, stopped, outcomes)

    async def _engine_call(
        self, jobs: list[GenerationJob], calls: _Calls
    ) -> list[JobOutput | GenerationResult]:
        loop = asyncio.get_running_loop()
        hook = self._hook(jobs, calls, loop)

        def call() -> Sequence[JobOutput]:  # on the engine thread
            loop.call_soon_threadsafe(calls.on_start)
            return self._engine.generate(jobs, self._timeout, self._outage.abandon_thread, hook)

        try:
            outputs = await loop.run_in_executor(self._engine_thread, call)
        except RequestsStopped:  # every request of the call stopped: each is answered already
            return [
                GenerationResult.failed(job.request_id, calls.stopped[job.request_id])
                for job in jobs
            ]
        except EngineError as exc:
            if self.abandoned:
                raise Abandoned from exc
            ids = [job.request_id for job in jobs]
            if exc.code is ErrorCode.OUT_OF_MEMORY and len(jobs) > 1:
                log.warning("out of memory on a batch; splitting it", extra={"request_ids": ids})
                half = len(jobs) // 2
                first = await self._generate(jobs[:half], calls)
                return first + await self._generate(jobs[half:], calls)
            log.warning("engine error: %s", exc.message, extra={"request_ids": ids})
            return [GenerationResult.failed(job.request_id, exc.code) for job in jobs]
        return list(outputs)

    def _hook(
        self, jobs: list[GenerationJob], calls: _Calls, loop: asyncio.AbstractEventLoop
    ) -> StepHook:
        stopped = calls.stopped

        def after_step(step: int, total: int) -> None:  # on the engine thread
            live = [job for job in jobs if job.request_id not in stopped]
            codes = self._stops(live)
            if codes:
                stopped.update(codes)
                log.info("requests stopped at a step boundary", extra={"request_ids": list(codes)})
                loop.call_soon_threadsafe(calls.on_stopped, dict(codes))
                live = [job for job in live if job.request_id not in codes]
                if not live:
                    raise RequestsStopped(codes)  # nobody left to run for: the call ends
            if calls.on_step is not None:
                calls.on_step([job.request_id for job in live], step, total)

        return after_step

    async def finish(
        self, outcome: JobOutput | GenerationResult, fresh: bool = False
    ) -> GenerationResult:
        """The job's result: its images encoded and stored (uploads.py). A request cancelled or
        past its deadline once its generation ended is stopped here, its images not stored:
        once they are, it is answered `completed`. `fresh`: no worker ran it before
        (journal.py) and its folder was not looked up: its images are created, never
        overwritten, and a taken key means its request_id was used before."""
        if isinstance(outcome, GenerationResult):
            return outcome
        request_id = outcome.job.request_id
        code = self._stops([outcome.job]).get(request_id)
        if code is not None:
            log.info(
                "request stopped before its images were stored", extra={"request_id": request_id}
            )
            return GenerationResult.failed(request_id, code)
        return await self._uploader.store(outcome, fresh)
