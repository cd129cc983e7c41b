"""Before a request runs: has it been answered already, or has it killed workers before?

The crash-loop guard (arq's max tries, for a worker that dies): before a request's engine call, a
small marker object `<prefix>/<request_id>/_attempt-<time>-<token>` in the image store records
the attempt; the request's markers are deleted once its outcome is published. A request delivered
again with markers on record was running when a worker died (kill -9, the kernel's OOM killer):
it runs alone, with no other batch in flight, so it cannot take innocent requests down with it;
with MAX_ATTEMPTS markers on record it is answered `attempts_exhausted` without running.

One object per attempt, counted by listing, rather than one counter read and then rewritten:
writing a marker does not depend on reading the others, so for a request that will start at once
(a lone request on an idle worker) the marker is written side by side with the lookup, and the
engine waits for one store round trip instead of two. A request that waits in the queue gets its
marker only when it starts: a worker that dies must not count an attempt against requests it
never ran.

The markers sit in the request's own folder beside its images (named `<index>.<ext>`, which a
marker's name can never be), so one listing answers both questions: how many attempts are on
record, and are its images stored already. A request whose images are all listed, with metadata
vouching for the same parameters (a HEAD per image, only then), is answered from the store: an
earlier delivery finished but was not committed (a crash, a rebalance), or it was sent twice.

All of it is store I/O on threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

from consumer.generation.engine import GenerationJob
from consumer.output.images import look_up
from consumer.requests.decision import Stored
from consumer.stoppable import Backoff
from schemas import GenerationResult
from storage import ImageStore, StorageError

log = logging.getLogger(__name__)

MARKER_PREFIX = "_attempt-"
# A lookup that fails for a passing reason (a connection reset, a 503) is tried this often.
LOOKUP_TRIES = 3
# Keys listed per request: its images first (digits sort before "_"), then its markers; past
# MAX_ATTEMPTS the count no longer matters.
_LIST_LIMIT = 100


@dataclass(frozen=True)
class Preflight:
    attempts: int  # attempts on record: earlier deliveries that started and never finished
    stored: Stored  # what the store holds under the request's id
    answer: GenerationResult | None = None  # the stored outcome, when stored is Stored.SAME
    markers: tuple[str, ...] = ()  # marker keys on record, this attempt's own among them
    marked: bool = False  # this attempt's marker is written, last of `markers` (start_now)


class AttemptLog:
    def __init__(self, store: ImageStore, key_prefix: str, max_attempts: int) -> None:
        self._store = store
        self._prefix = key_prefix.strip("/")
        self.max_attempts = max_attempts  # 0: no guard

    def folder(self, request_id: str) -> str:
        """The request's folder: its images and its attempt markers."""
        return f"{self._prefix}/{request_id}" if self._prefix else request_id

    def markers(self, request_id: str) -> list[str]:
        """The request's attempt markers on record, oldest first. Raises StorageError."""
        return _markers(self._store.keys_in(self.folder(request_id), _LIST_LIMIT))

    async def preflight(self, job: GenerationJob, start_now: bool = False) -> Preflight:
        """The lookup of one request: one listing of its folder. With `start_now` (a lone
        request on an idle worker: it starts as soon as this returns) its marker is written
        beside the lookup, each on a thread: one store round trip before the engine. Otherwise
        (a poll of several: the worker is busy or about to be) nothing is written yet. A lookup
        that fails for a passing reason is tried LOOKUP_TRIES times within about half a second
        (boto3 does not retry: the worker owns every retry). Never raises: a store that stays
        away costs the check, not the request (its upload will wait for the store anyway)."""
        request_id = job.request_id
        if start_now:
            # The write first: it takes the store longer than the listing does.
            own, found = await asyncio.gather(
                asyncio.to_thread(self.record, request_id), self._lookup_tried(job)
            )
        else:
            found, own = await self._lookup_tried(job), None
        mine = (own,) if own is not None else ()
        if isinstance(found, StorageError):
            log.warning("preflight skipped", extra={"request_id": request_id})
            return Preflight(0, Stored.UNKNOWN, None, mine, own is not None)
        stored, answer, listed = found
        if stored is Stored.OTHER:  # another request's folder: its markers are not ours
            return Preflight(0, stored, None, mine, own is not None)
        earlier = tuple(key for key in listed if key != own)
        attempts = 0 if stored is Stored.SAME else len(earlier)
        return Preflight(attempts, stored, answer, earlier + mine, own is not None)

    async def _lookup_tried(
        self, job: GenerationJob
    ) -> tuple[Stored, GenerationResult | None, list[str]] | StorageError:
        backoff, never = Backoff(0.1, 0.4), asyncio.Event()
        for _ in range(LOOKUP_TRIES - 1):
            found = await asyncio.to_thread(self._lookup, job)
            if not isinstance(found, StorageError) or not found.retryable:
                return found
            await backoff.wait(never)
        return await asyncio.to_thread(self._lookup, job)

    def _lookup(
        self, job: GenerationJob
    ) -> tuple[Stored, GenerationResult | None, list[str]] | StorageError:
        """What the store holds under the request's id (decision.Stored, and the stored result
        when it is all there for these parameters) and the markers on record."""
        try:
            keys = self._store.keys_in(self.folder(job.request_id), _LIST_LIMIT)
            stored, answer = look_up(job, self._store, self._prefix, keys)
        except StorageError as exc:
            return exc
        return stored, answer, _markers(keys) if self.max_attempts else []

    def record(self, request_id: str) -> str | None:
        """Durably note the start of an attempt (before the engine call); its marker's key, or
        None when the guard is off or the store refused (the guard is weaker for this request,
        nothing more)."""
        if not self.max_attempts:
            return None
        # Time first, so that a listing shows attempts in order; the token keeps two workers
        # starting the same request in the same nanosecond apart.
        name = f"{MARKER_PREFIX}{time.time_ns():020d}-{secrets.token_hex(4)}"
        key = f"{self.folder(request_id)}/{name}"
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


def _markers(keys: list[str]) -> list[str]:
    return [key for key in keys if key.rpartition("/")[2].startswith(MARKER_PREFIX)]
