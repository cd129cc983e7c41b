"""A request's images to the store: each encoded and uploaded on its own I/O thread (side by side,
not one after the other), retried as a whole while the store is away. A fresh request's images
are created, never written over: a key already taken means its request_id was used before, and
the folder says whose it is (taken.py). Nothing here touches Kafka or the engine."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from consumer.generation.engine import JobOutput
from consumer.output.images import completed_result, encode_one, store_one
from consumer.output.taken import look_in_folder, remove_created
from consumer.requests.decision import Stored
from consumer.stoppable import Abandoned, Backoff, StopRequested
from schemas import ErrorCode, GenerationResult, ImageRef
from storage import AlreadyStored, ImageStore, StorageError

log = logging.getLogger(__name__)

T = TypeVar("T")


class StoreOutage:
    """Waiting out a store that went away, for every store call of a batch (init images read,
    images uploaded): capped backoff, until the worker abandons its work."""

    def __init__(self, max_backoff_seconds: float, on_retry: Callable[[], None]) -> None:
        self._max_backoff = max_backoff_seconds
        self._on_retry = on_retry
        # Set by abandon(): the engine stops at its next denoising step, retries stop at once.
        self.abandon_thread = threading.Event()
        self._abandon_loop = asyncio.Event()

    def abandon(self) -> None:
        self.abandon_thread.set()
        self._abandon_loop.set()

    @property
    def abandoned(self) -> bool:
        return self.abandon_thread.is_set()

    async def retry(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """`attempt()` until it succeeds: a passing store error is waited out (capped backoff),
        a refusal (StorageError, not retryable) raised; Abandoned once the worker abandons its
        work."""
        backoff = Backoff(0.2, self._max_backoff)
        while True:
            try:
                return await attempt()
            except StorageError as exc:
                if not exc.retryable:
                    raise
                await self._wait(exc, backoff)

    async def _wait(self, exc: StorageError, backoff: Backoff) -> None:
        """A store call failed for a passing reason: wait before the next try, or give the
        batch up (Abandoned) once the worker abandons its work."""
        if self.abandoned:
            raise Abandoned from exc
        self._on_retry()
        log.warning("store unavailable (%s); retrying in %.1fs", exc, backoff.delay)
        try:
            await backoff.wait(self._abandon_loop)
        except StopRequested:
            raise Abandoned from exc


class ImageUploader:
    def __init__(
        self,
        store: ImageStore,
        key_prefix: str,
        png_compress_level: int,
        io_threads: ThreadPoolExecutor,
        outage: StoreOutage,
        reuse_stored: bool = True,
    ) -> None:
        """`reuse_stored` (REUSE_STORED_IMAGES): a request found stored at upload is answered
        from the store; off, its images are written again over the same ones."""
        self._store = store
        self._key_prefix = key_prefix
        self._png_level = png_compress_level
        self._io_threads = io_threads
        self._outage = outage
        self._reuse_stored = reuse_stored

    async def store(self, output: JobOutput, fresh: bool = False) -> GenerationResult:
        """The `completed` result once every image is stored, or `failed` (storage_failed,
        request_id_conflict). `fresh`: no worker ran it before (journal.py) and its folder was
        not looked up: its images are created, never overwritten."""
        try:
            return await self._store_one(output, create=fresh)
        except AlreadyStored:
            return await self._taken(output)

    async def _taken(self, output: JobOutput) -> GenerationResult:
        """A fresh request found one of its keys taken: its request_id was used before
        (taken.py). Its stored answer, a refusal, or its images stored over what vouches for
        nothing."""
        job = output.job
        try:  # a key is taken: never written over before the folder says whose it is
            stored, answer = await self._outage.retry(
                lambda: asyncio.to_thread(look_in_folder, job, self._store, self._key_prefix)
            )
        except StorageError as exc:
            return _refused(job.request_id, exc)
        if stored is Stored.SAME and answer is not None and self._reuse_stored:
            return answer
        if stored is Stored.OTHER:
            log.warning("request_id used before", extra={"request_id": job.request_id})
            await asyncio.to_thread(remove_created, job, self._store, self._key_prefix)
            return GenerationResult.failed(job.request_id, ErrorCode.REQUEST_ID_CONFLICT)
        return await self._store_one(output, create=False)

    async def _store_one(self, output: JobOutput, create: bool = False) -> GenerationResult:
        """Each image encoded and uploaded on its own I/O thread (a request's images side by
        side, not one after the other); retried as a whole while the store is away."""
        loop = asyncio.get_running_loop()
        encoded: dict[int, bytes] = {}  # encoded once, however often the upload is retried

        def encode_and_store(index: int) -> ImageRef:  # one hand-off per image, not two
            if index not in encoded:
                encoded[index] = encode_one(output, index, self._png_level)
            return store_one(output, index, encoded[index], self._store, self._key_prefix, create)

        count = len(output.images)
        try:
            images = await self._outage.retry(
                lambda: self._each_image(loop, encode_and_store, count)
            )
        except AlreadyStored:  # a refusal of its own: store() looks at whose the key is
            raise
        except StorageError as exc:
            return _refused(output.job.request_id, exc)
        return completed_result(output, images)

    async def _each_image(
        self,
        loop: asyncio.AbstractEventLoop,
        encode_and_store: Callable[[int], ImageRef],
        count: int,
    ) -> list[ImageRef]:
        """All of them finish before this returns or raises (no upload left running behind a
        retry); the first error is raised, a refusal before a transient one."""
        calls = [loop.run_in_executor(self._io_threads, encode_and_store, i) for i in range(count)]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        if errors:
            refused = [e for e in errors if isinstance(e, StorageError) and not e.retryable]
            others = [e for e in errors if not isinstance(e, StorageError)]
            raise (others or refused or errors)[0]
        return [o for o in outcomes if isinstance(o, ImageRef)]


def _refused(request_id: str, exc: StorageError) -> GenerationResult:
    log.error("store refused: %s", exc, extra={"request_id": request_id})
    return GenerationResult.failed(request_id, ErrorCode.STORAGE_FAILED)
