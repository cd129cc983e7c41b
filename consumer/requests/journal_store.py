"""The attempt journals as objects in the image store (journal.py): naming, reading, trimming, and
whether a lease still moves. Synchronous store calls: run them on a thread."""

from __future__ import annotations

import logging
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable

from consumer.requests.journal_entries import Journal, settled
from storage import ImageStore, StorageError, supports_create

log = logging.getLogger(__name__)

JOURNAL_FOLDER = "_attempts"  # request ids start with a letter or digit: never this
# A journal not renewed for this long belongs to a worker that died; a worker with work in
# progress renews it every LEASE_SECONDS / 3 (one small write every two seconds). Also the
# allowance for clocks: a lease is taken for lapsed only LEASE_SECONDS after its end.
LEASE_SECONDS = 6.0
# Other workers' journals read per assignment; a lapsed one this old is deleted unread.
MAX_JOURNALS = 1000
FORGET_AFTER_SECONDS = 7 * 24 * 3600.0


def owner_id() -> str:
    """This process's name in journal keys: host, pid and a random part (a restarted process
    with the same pid on the same host is another owner)."""
    host = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def observed(
    journal: Journal | None, owner: str, last_lease: dict[str, tuple[float, float]]
) -> Journal | None:
    """`journal` as read again, marked lapsed once its lease has not moved for LEASE_SECONDS
    of this worker's time (`last_lease`: each journal's lease and when it was first seen)."""
    if journal is not None:
        lease, seen_at = last_lease.get(owner, (math.nan, time.monotonic()))
        if lease != journal.lease_until:
            last_lease[owner] = (journal.lease_until, time.monotonic())
        elif time.monotonic() - seen_at > LEASE_SECONDS:
            journal.lease_until = -math.inf  # not renewed: its owner died
    return journal


def read_others(store: ImageStore, folder: str, own_key: str) -> dict[str, Journal]:
    """Every journal in `folder` but this worker's own. Raises StorageError."""
    keys = [k for k in store.keys_in(folder, MAX_JOURNALS) if k != own_key]
    return read_journals(store, keys)


def read_journals(store: ImageStore, keys: Iterable[str]) -> dict[str, Journal]:
    """The journals under `keys` (a deleted one is left out, one that is not a journal too).
    Raises StorageError."""
    journals = {}
    for key in keys:
        data = store.get(key)
        if data is None:
            continue  # deleted since the listing
        try:
            journals[key] = Journal.from_bytes(data)
        except ValueError as exc:
            log.warning("skipping %s: %s", key, exc)
    return journals


def trim(
    store: ImageStore,
    journals: dict[str, Journal],
    partitions: set[tuple[str, int]],
    now: float,
) -> None:
    """Lapsed journals lose the entries of `partitions` (carried over by the reader); an empty
    one, or one lapsed for FORGET_AFTER_SECONDS, is deleted. Best effort."""
    for key, journal in journals.items():
        left = settled(journal, partitions, now, LEASE_SECONDS)
        try:
            if left is None or now - journal.lease_until > FORGET_AFTER_SECONDS:
                store.delete(key)
            elif left is not journal:
                store.put(key, left.to_bytes(), "application/json")
        except StorageError as exc:
            log.warning("attempt journal %s not trimmed: %s", key, exc)


def creates_honoured(store: ImageStore, folder: str, owner: str) -> bool | None:
    """Whether the store refuses a second `create` of one key (None: it could not be asked). The
    probe object sits beside the journals' folder, not in it (readers list that folder)."""
    try:
        honoured = supports_create(store, f"{folder}-probe-{owner}")
    except StorageError as exc:
        log.warning("store not asked about conditional writes: %s", exc)
        return None
    if not honoured:
        log.warning("the store ignores If-None-Match: every request is looked up before it runs")
    return honoured
