"""The crash-loop guard's record (arq's max tries, for a worker that dies): one journal per worker.

Each worker process keeps one small object, `<prefix>/_attempts/<owner>.json`, listing the records
it has taken into a batch and not yet seen committed (journal_entries.py: their states and the
crashes on record). It is written once before a batch reaches the engine, and again (without
anyone waiting) when the engine takes a batch that was recorded while another ran; writes are
coalesced, so a backlog costs about one store call per batch instead of a marker written and
deleted per request. While the worker has work in progress its lease is renewed every
LEASE_SECONDS / 3.

When partitions are assigned, the new owner reads every other journal once (one listing, a read
each): a record another worker ran when it died counts one crash more; a record it ran past
MAX_ATTEMPTS crashes is answered `attempts_exhausted`; a record a live worker is still running
(an owner past its revoke limit) is waited for, not taken for a crash. The counts are carried into
the new owner's own journal before the old journal is trimmed, so the evidence is never lost
between two writes; an entry leaves a journal only once its record's commit has landed.

The journal also tells which records may have run before (any worker listed them): only those
need a store lookup before they run (lookup.py); every other record is fresh, and its images are
stored with `create` (nothing overwritten: a request_id used before is found then).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeAlias

from aiokafka import ConsumerRecord

from consumer.requests.journal_entries import (
    Entry,
    Inheritance,
    Journal,
    RecordKey,
    State,
    inherit,
)
from consumer.requests.journal_store import (
    JOURNAL_FOLDER,
    LEASE_SECONDS,
    creates_honoured,
    observed,
    read_journals,
    read_others,
    trim,
)
from consumer.stoppable import wait_or_stop
from storage import ImageStore, StorageError

log = logging.getLogger(__name__)

Record: TypeAlias = ConsumerRecord[Any, Any]
Partition: TypeAlias = tuple[str, int]

WAIT_SECONDS = 300.0  # waiting for a live worker to let go (a long batch past its revoke)
LOAD_SECONDS = 10.0  # reading the journals at an assignment, at most
# An entry not running here is dropped this long after its last change, committed or not (the
# partition's new owner has read it long since); while the record stays here, its count is kept.
HELD_SECONDS = 600.0


def key_of(record: Record) -> RecordKey:
    return (record.topic, record.partition, record.offset)


class AttemptJournal:
    def __init__(
        self,
        store: ImageStore,
        key_prefix: str,
        owner: str,
        committed: Callable[[Partition], int],
    ) -> None:
        """`committed`: the offset below which this member's commits have landed, per
        partition (-1: none)."""
        prefix = key_prefix.strip("/")
        self.folder = f"{prefix}/{JOURNAL_FOLDER}" if prefix else JOURNAL_FOLDER
        self.key = f"{self.folder}/{owner}.json"
        self._owner = owner
        self._store = store
        self._committed = committed
        self._own = Journal(owner, 0.0)
        self._inherited = Inheritance()
        self._unknown: set[Partition] = set()  # their journals could not be read: all suspect
        self._revoked: set[Partition] = set()  # taken away since this worker had them
        self._loaded: set[Partition] = set()  # assigned, their journals read
        self._load_lock = asyncio.Lock()
        self._creates: bool | None = None  # the store refuses a second create of a key
        self._write_lock = asyncio.Lock()
        self._changes = 0  # bumped by every change; a write covers the changes before it
        self._written = 0

    async def check_store(self) -> None:
        """Ask the store whether it honours `create` (three calls; again later if it could
        not be asked)."""
        self._creates = await asyncio.to_thread(
            creates_honoured, self._store, self.folder, self._owner
        )

    # --- what triage asks -----------------------------------------------------------------------

    def attempts(self, record: Record) -> int:
        """Crashes on record for this record (its earlier runs by workers that died)."""
        key = key_of(record)
        own = self._own.entries.get(key)
        inherited = self._inherited.attempts.get(key, 0)
        return max(own.attempts, inherited) if own is not None else inherited

    def may_have_run(self, record: Record) -> bool:
        """Whether any worker may have started it before: then its store folder is looked at.
        Every record may have, as long as the store is not known to honour `create` (which
        finds a request_id used before when its images are written)."""
        key = key_of(record)
        if not self._creates or (record.topic, record.partition) in self._unknown:
            return True
        return key in self._own.entries or key in self._inherited.attempts

    def busy_elsewhere(self, records: Iterable[Record]) -> list[Record]:
        """Those a live worker still runs (past its revoke limit)."""
        return [r for r in records if key_of(r) in self._inherited.busy]

    # --- assignment -----------------------------------------------------------------------------

    async def ready(self, partitions: set[Partition]) -> None:
        """The journals are read for `partitions` (each once after it is assigned): before any
        of their records is triaged. aiokafka may hand out a new partition's records before its
        rebalance listener (which reads them too) has finished."""
        if partitions <= self._loaded:
            return
        async with self._load_lock:
            missing = partitions - self._loaded
            if missing:
                try:
                    await self.load(missing)
                finally:  # read, or known unreadable (every record suspect)
                    self._loaded |= missing

    async def load(self, partitions: set[Partition]) -> None:
        """Read the other workers' journals for the records of newly assigned `partitions`,
        carry what they say into this journal, then trim the lapsed ones. Entries of records
        committed since are kept and counted too: they are never fetched again, and this
        journal drops them once its own commits pass them. A store that cannot be read makes
        every record of these partitions suspect of having run (looked up), with no crash on
        record."""
        self._revoked -= partitions
        try:
            journals = await asyncio.wait_for(
                asyncio.to_thread(read_others, self._store, self.folder, self.key), LOAD_SECONDS
            )
        except (StorageError, TimeoutError) as exc:
            log.warning("attempt journals not read: %s", exc)
            self._unknown |= partitions
            return
        self._unknown -= partitions
        now = time.time()
        found = inherit(journals, partitions, {}, now, LEASE_SECONDS)
        log.info(
            "attempt journals read",
            extra={
                "journals": len(journals),
                "crashes_on_record": sum(1 for count in found.attempts.values() if count),
                "running_elsewhere": len(found.busy),
            },
        )
        self._inherited.attempts.update(found.attempts)
        self._inherited.busy.update(found.busy)
        for key, attempts in found.attempts.items():
            if attempts and key not in self._own.entries:  # carried: kept until committed
                self._own.entries[key] = Entry("", attempts, State.HELD, now)
        if any(found.attempts.values()) and not await self.write():
            return  # the evidence is only in the old journals: leave them as they are
        await asyncio.to_thread(trim, self._store, journals, partitions, now)

    async def wait_released(
        self, records: list[Record], until: asyncio.Event, step: Callable[[], None]
    ) -> None:
        """Until no live worker runs `records` any more, reading its journal every second: it
        finished or let go of them (no crash), or it stopped renewing its lease for
        LEASE_SECONDS of this worker's own time (it died: a crash each, for what it ran). Clocks
        are not trusted for this: a lease that does not move is. At most WAIT_SECONDS."""
        wanted = {key_of(r) for r in records}
        last_lease: dict[str, tuple[float, float]] = {}  # journal -> (lease_until, seen at)
        deadline = time.monotonic() + WAIT_SECONDS
        while keys := wanted & set(self._inherited.busy):
            if time.monotonic() > deadline:
                log.warning("gave up waiting for a live worker: its records run here too")
                for key in keys:
                    self._settle(key, None)
                return
            step()  # waiting on another worker is not a stalled intake
            owners = {self._inherited.busy[k] for k in keys}
            log.info("waiting for a live worker to let go", extra={"journals": sorted(owners)})
            await wait_or_stop(until, 1.0)  # raises StopRequested at a stop
            try:
                journals = await asyncio.to_thread(read_journals, self._store, owners)
            except StorageError as exc:
                log.warning("attempt journal not read: %s", exc)
                continue
            for owner in owners:
                journal = observed(journals.get(owner), owner, last_lease)
                for key in keys:
                    if self._inherited.busy.get(key) == owner:
                        self._settle(key, journal)

    def _settle(self, key: RecordKey, journal: Journal | None) -> None:
        """What `journal` says of a record a live worker held: running still (busy), or its
        crashes on record. None: the journal is gone (let go: no crash)."""
        found = Inheritance()
        if journal is not None:
            found = inherit({"": journal}, {(key[0], key[1])}, {}, time.time(), LEASE_SECONDS)
            if key in found.busy:
                return
        self._inherited.busy.pop(key, None)
        self._inherited.add(key, found.attempts.get(key, 0))

    def released(self, partitions: set[Partition]) -> None:
        """Revoked: their batches still in flight here run on (past the revoke limit, the new
        owner waits for them); once each is answered, the journal is written at once, for the
        new owner waiting on it."""
        self._revoked |= partitions
        self._loaded -= partitions

    # --- batches --------------------------------------------------------------------------------

    async def recorded(self, records: list[tuple[Record, str]], engine_busy: bool) -> bool:
        """Before a batch's engine call: its records (with their request ids) are on record,
        as NEXT when the engine is still busy with another batch, else ENGINE. False when the
        store refused (the guard is weaker for this batch, nothing more)."""
        state = State.NEXT if engine_busy else State.ENGINE
        self._set(records, state)
        return await self.write()

    def engine_started(self, records: Iterable[Record]) -> None:
        """The engine took the batch: its NEXT entries become ENGINE, written without anyone
        waiting (a crash before the write lands is blamed on the batch before it)."""
        changed = self._set_state(map(key_of, records), State.NEXT, State.ENGINE)
        if changed:
            asyncio.get_running_loop().create_task(self.write())

    def left(self, records: Iterable[Record]) -> None:
        """Given up at a drain or answered: not running any more (never a crash); the entry
        goes once its commit lands. Written at once for a partition revoked meanwhile (its new
        owner waits for this), otherwise with the next write."""
        records = list(records)
        self._set_state(map(key_of, records), None, State.HELD)
        if any((r.topic, r.partition) in self._revoked for r in records):
            asyncio.get_running_loop().create_task(self.write())

    def running(self) -> bool:
        return any(e.state is not State.HELD for e in self._own.entries.values())

    # --- writing --------------------------------------------------------------------------------

    async def write(self) -> bool:
        """Write the journal as it is now (entries of committed records dropped). Coalesced:
        a caller that arrives while a write runs waits for it and then, unless a later write
        already covered its change, writes once for all who waited."""
        self._changes += 1
        wanted = self._changes
        async with self._write_lock:
            if self._written >= wanted:
                return True
            covered = self._changes
            data = self._document()
            try:
                await asyncio.to_thread(self._store.put, self.key, data, "application/json")
            except StorageError as exc:
                log.warning("attempt journal not written: %s", exc)
                return False
            self._written = covered
            return True

    async def close(self) -> None:
        """At exit: nothing runs here any more; the lease ends now (nobody waits for it)."""
        self._set_state(list(self._own.entries), None, State.HELD)
        self._own.lease_until = time.time()
        await self.write()

    async def keep_leased(self) -> None:
        """Renew the lease while work is in progress (a task for the worker's life)."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            if self.running():
                await self.write()
            if self._creates is None:
                await self.check_store()

    def _document(self) -> bytes:
        now = time.time()
        committed = {p: self._committed(p) for p in {(k[0], k[1]) for k in self._own.entries}}
        self._own.entries = {
            key: entry
            for key, entry in self._own.entries.items()
            if key[2] >= committed[(key[0], key[1])]
            and (entry.state is not State.HELD or now - entry.at < HELD_SECONDS)
        }
        if self.running():
            self._own.lease_until = now + LEASE_SECONDS
        return self._own.to_bytes()

    def _set(self, records: list[tuple[Record, str]], state: State) -> None:
        now = time.time()
        for record, request_id in records:
            key = key_of(record)
            self._own.entries[key] = Entry(request_id, self.attempts(record), state, now)

    def _set_state(self, keys: Iterable[RecordKey], old: State | None, new: State) -> bool:
        """Entries in state `old` (None: any) turn `new`; whether any did."""
        now, changed = time.time(), False
        for key in keys:
            entry = self._own.entries.get(key)
            if entry is not None and (old is None or entry.state is old):
                self._own.entries[key] = Entry(entry.request_id, entry.attempts, new, now)
                changed = True
        return changed
