"""Before a request runs: has it been answered already, or has it killed workers before?

The crash-loop guard (arq's max tries, for a worker that dies): before a request's engine call, a
small object `<prefix>/_attempts/<request_id>` in the image store records one more attempt; it is
deleted once the request's outcome is published. A request delivered again with an attempt on
record was running when a worker died (kill -9, the kernel's OOM killer): it runs alone, with no
other batch in flight, so it cannot take innocent requests down with it; with MAX_ATTEMPTS on
record it is answered `attempts_exhausted` without running.

A request whose images are already stored under its keys with the same parameters (an earlier
delivery finished but was not committed: a crash, a rebalance) is answered from the store.

Request ids cannot start with "_", so attempt keys never collide with image keys. All of it is
store I/O on threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

from consumer.engine import GenerationJob
from consumer.results import stored_result
from schemas import GenerationResult
from storage import ImageStore, StorageError

log = logging.getLogger(__name__)

ATTEMPTS_FOLDER = "_attempts"


@dataclass(frozen=True)
class Preflight:
    attempts: int  # attempts on record: earlier deliveries that started and never finished
    stored: GenerationResult | None  # the outcome, when the store already holds it


class AttemptLog:
    def __init__(
        self, store: ImageStore, key_prefix: str, max_attempts: int, reuse_stored: bool
    ) -> None:
        self._store = store
        self._prefix = key_prefix.strip("/")
        self.max_attempts = max_attempts  # 0: no guard
        self._reuse_stored = reuse_stored

    def key(self, request_id: str) -> str:
        name = f"{ATTEMPTS_FOLDER}/{request_id}"
        return f"{self._prefix}/{name}" if self._prefix else name

    async def preflight(self, job: GenerationJob) -> Preflight:
        """Both lookups at once, each on a thread. Never raises: a store that is away costs the
        check, not the request (its upload will wait for the store anyway)."""
        stored, attempts = await asyncio.gather(
            asyncio.to_thread(self._stored, job), asyncio.to_thread(self._read, job.request_id)
        )
        if isinstance(stored, StorageError) or isinstance(attempts, StorageError):
            log.warning("preflight skipped", extra={"request_id": job.request_id})
            return Preflight(0, None)
        return Preflight(0 if stored is not None else attempts, stored)

    def _stored(self, job: GenerationJob) -> GenerationResult | StorageError | None:
        if not self._reuse_stored:
            return None
        try:
            return stored_result(job, self._store, self._prefix)
        except StorageError as exc:
            return exc

    def record(self, request_id: str, attempts: int) -> None:
        """Durably note the start of attempt number `attempts` (before the engine call)."""
        if not self.max_attempts:
            return
        body = json.dumps({"attempts": attempts, "at": round(time.time(), 3)}).encode()
        try:
            self._store.put(self.key(request_id), body, "application/json")
        except StorageError as exc:  # the guard is weaker for this request, nothing more
            log.warning("attempt not recorded: %s", exc, extra={"request_id": request_id})

    def clear(self, request_ids: list[str]) -> None:
        """The outcomes are published: forget the attempts (best effort)."""
        if not self.max_attempts:
            return
        for request_id in request_ids:
            try:
                self._store.delete(self.key(request_id))
            except StorageError as exc:
                log.warning("attempt not cleared: %s", exc, extra={"request_id": request_id})

    def _read(self, request_id: str) -> int | StorageError:
        if not self.max_attempts:
            return 0
        try:
            data = self._store.get(self.key(request_id))
        except StorageError as exc:
            return exc
        if data is None:
            return 0
        try:
            attempts = json.loads(data)["attempts"]
        except (ValueError, KeyError, TypeError):
            return 1  # unreadable: something started it
        return attempts if isinstance(attempts, int) and attempts > 0 else 1
