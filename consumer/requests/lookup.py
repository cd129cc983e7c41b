"""Before a request that may have run before starts: what does the store hold under its id?

A request's images sit in its own folder, `<prefix>/<request_id>/<index>.<ext>`; one listing of
it, and a HEAD per image listed (only then), tells whether an earlier delivery stored them all
for the same parameters (answered from the store: it finished but was not committed, a crash, a
rebalance), for other parameters (the request_id was used for another request), or not.

Only a record that may have run before (journal.py) is looked up before it runs; a fresh one is
not, and its images are stored with `create`, which finds a request_id used before at the first
image instead (uploads.py). All of it is store I/O on threads.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from consumer.generation.engine import GenerationJob
from consumer.output.images import look_up
from consumer.requests.decision import Stored
from consumer.stoppable import Backoff
from schemas import GenerationResult
from storage import ImageStore, StorageError

log = logging.getLogger(__name__)

# A lookup that fails for a passing reason (a connection reset, a 503) is tried this often.
LOOKUP_TRIES = 3
# Keys listed per request: its images, at most MAX_NUM_IMAGES of them, and whatever else.
_LIST_LIMIT = 100


@dataclass(frozen=True)
class Found:
    stored: Stored  # what the store holds under the request's id
    answer: GenerationResult | None = None  # the stored outcome, when stored is Stored.SAME


NOT_LOOKED_UP = Found(Stored.NOTHING)


class StoreLookup:
    def __init__(self, store: ImageStore, key_prefix: str) -> None:
        self._store = store
        self._prefix = key_prefix.strip("/")

    def folder(self, request_id: str) -> str:
        """The request's folder: its images."""
        return f"{self._prefix}/{request_id}" if self._prefix else request_id

    async def __call__(self, job: GenerationJob) -> Found:
        """The lookup of one request: one listing of its folder. A lookup that fails for a
        passing reason is tried LOOKUP_TRIES times within about half a second (boto3 does not
        retry: the worker owns every retry). Never raises: a store that stays away costs the
        check (Stored.UNKNOWN), not the request (its upload will wait for the store anyway)."""
        backoff, never = Backoff(0.1, 0.4), asyncio.Event()
        for _ in range(LOOKUP_TRIES - 1):
            found = await asyncio.to_thread(self.now, job)
            if not isinstance(found, StorageError) or not found.retryable:
                break
            await backoff.wait(never)
        else:
            found = await asyncio.to_thread(self.now, job)
        if isinstance(found, StorageError):
            log.warning("store lookup skipped", extra={"request_id": job.request_id})
            return Found(Stored.UNKNOWN)
        return found

    def now(self, job: GenerationJob) -> Found | StorageError:
        """The lookup, on the calling thread, untried."""
        try:
            keys = self._store.keys_in(self.folder(job.request_id), _LIST_LIMIT)
            stored, answer = look_up(job, self._store, self._prefix, keys)
        except StorageError as exc:
            return exc
        return Found(stored, answer)
