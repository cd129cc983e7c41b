"""Before a request runs: has it been answered already, or has it killed workers before?

The crash-loop guard (arq's max tries, for a worker that dies): before a request's engine call, a
small marker object `<prefix>/_attempts/<request_id>/<attempt>` in the image store records the
attempt; the request's markers are deleted once its outcome is published. A request delivered
again with markers on record was running when a worker died (kill -9, the kernel's OOM killer):
it runs alone, with no other batch in flight, so it cannot take innocent requests down with it;
with MAX_ATTEMPTS markers on record it is answered `attempts_exhausted` without running.

One object per attempt, counted by listing the request's folder, rather than one counter read
and then rewritten: writing a marker does not depend on reading the others, so for a request
that will start at once (a lone request on an idle worker) the marker is written side by side
with the lookups, and the engine waits for one store round trip instead of two. A request that
waits in the queue gets its marker only when it starts: a worker that dies must not count an
attempt against requests it never ran.

A request whose images are already stored under its keys with the same parameters (an earlier
delivery finished but was not committed: a crash, a rebalance) is answered from the store.

Request ids cannot start with "_", so attempt keys never collide with image keys. All of it is
store I/O on threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.engine import GenerationJob
from consumer.results import stored_result
from schemas import GenerationResult
from storage import ImageStore, StorageError

log = logging.getLogger(__name__)

ATTEMPTS_FOLDER = "_attempts"
# Markers listed per request: past MAX_ATTEMPTS the count no longer matters.
_LIST_LIMIT = 100


@dataclass(frozen=True)
class Preflight:
    attempts: int  # attempts on record: earlier deliveries that started and never finished
    stored: GenerationResult | None  # the outcome, when the store already holds it
    markers: tuple[str, ...] = ()  # marker keys on record, this attempt's own among them
    marked: bool = False  # this attempt's marker is written (preflight with start_now)


class AttemptLog:
    def __init__(
        self, store: ImageStore, key_prefix: str, max_attempts: int, reuse_stored: bool
    ) -> None:
        self._store = store
        self._prefix = key_prefix.strip("/")
        self.max_attempts = max_attempts  # 0: no guard
        self._reuse_stored = reuse_stored

    def folder(self, request_id: str) -> str:
        name = f"{ATTEMPTS_FOLDER}/{request_id}"
        return f"{self._prefix}/{name}" if self._prefix else name

    async def preflight(self, job: GenerationJob, start_now: bool = False) -> Preflight:
        """The lookups of one request. With `start_now` (a lone request on an idle worker: it
        starts as soon as this returns) they run side by side, each on a thread, with its marker
        written beside them: one store round trip before the engine. Otherwise (a poll of
        several: the worker is busy or about to be) one thread does them in turn, which costs
        the event loop one hand-off per request instead of two. Never raises: a store that is
        away costs the check, not the request (its upload will wait for the store anyway)."""
        request_id = job.request_id
        if start_now:
            stored, listed, own = await asyncio.gather(
                asyncio.to_thread(self._stored, job),
                asyncio.to_thread(self._list, request_id),
                asyncio.to_thread(self.record, request_id),
            )
        else:
            stored, listed = await asyncio.to_thread(self._lookups, job)
            own = None
        mine = (own,) if own is not None else ()
        if isinstance(stored, StorageError) or isinstance(listed, StorageError):
            log.warning("preflight skipped", extra={"request_id": request_id})
            return Preflight(0, None, mine, start_now)
        earlier = tuple(key for key in listed if key != own)
        attempts = 0 if stored is not None else len(earlier)
        return Preflight(attempts, stored, earlier + mine, start_now)

    def _lookups(
        self, job: GenerationJob
    ) -> tuple[GenerationResult | StorageError | None, list[str] | StorageError]:
        return self._stored(job), self._list(job.request_id)

    def _stored(self, job: GenerationJob) -> GenerationResult | StorageError | None:
        if not self._reuse_stored:
            return None
        try:
            return stored_result(job, self._store, self._prefix)
        except StorageError as exc:
            return exc

    def record(self, request_id: str) -> str | None:
        """Durably note the start of an attempt (before the engine call); its marker's key, or
        None when the guard is off or the store refused (the guard is weaker for this request,
        nothing more)."""
        if not self.max_attempts:
            return None
        # Time first, so that a listing shows attempts in order; the token keeps two workers
        # starting the same request in the same nanosecond apart.
        key = f"{self.folder(request_id)}/{time.time_ns():020d}-{secrets.token_hex(4)}"
        body = json.dumps({"at": round(time.time(), 3)}).encode()
        try:
            self._store.put(key, body, "application/json")
        except StorageError as exc:
            log.warning("attempt not recorded: %s", exc, extra={"request_id": request_id})
            return None
        return key

    def clear(self, markers: Sequence[str]) -> None:
        """The outcome is published: forget the attempts (best effort)."""
        for key in markers:
            try:
                self._store.delete(key)
            except StorageError as exc:
                log.warning("attempt not cleared: %s", exc, extra={"key": key})

    def _list(self, request_id: str) -> list[str] | StorageError:
        if not self.max_attempts:
            return []
        try:
            return self._store.keys_in(self.folder(request_id), _LIST_LIMIT)
        except StorageError as exc:
            return exc
