"""Attempt journals in a test's store (consumer/requests/journal.py): seeded as a worker that died
would have left them, and read back as the next owner would read them."""

from __future__ import annotations

import time

from consumer.requests.journal_entries import Entry, Journal, RecordKey, State, inherit
from consumer.requests.journal_store import JOURNAL_FOLDER, LEASE_SECONDS, read_journals
from storage import ImageStore

TOPIC = "requests"


def seed_crashes(
    store: ImageStore,
    offset: int,
    request_id: str,
    crashes: int,
    topic: str = TOPIC,
    owner: str = "dead-worker",
    prefix: str = "",
    partition: int = 0,
) -> str:
    """The journal of a worker that died running record `offset` (its `crashes`-th crash)."""
    long_ago = time.time() - 3600
    entry = Entry(request_id, crashes - 1, State.ENGINE, long_ago)
    journal = Journal(owner, long_ago, {(topic, partition, offset): entry})
    key = f"{prefix}/{JOURNAL_FOLDER}/{owner}.json".lstrip("/")
    store.put(key, journal.to_bytes(), "application/json")
    return key


def journals(store: ImageStore, prefix: str = "") -> dict[str, Journal]:
    """Every journal in the store, read as a new owner reads them."""
    folder = f"{prefix}/{JOURNAL_FOLDER}".lstrip("/")
    return read_journals(store, store.keys_in(folder, 1000))


def crashes_if_all_died(
    store: ImageStore,
    committed: int = 0,
    topic: str = TOPIC,
    prefix: str = "",
    partition: int = 0,
) -> dict[int, int]:
    """Offset -> crashes on record that the next owner of the partition would count, were every
    worker to die now (each lease lapsed)."""
    later = time.time() + 10 * LEASE_SECONDS
    tp = (topic, partition)
    found = inherit(journals(store, prefix), {tp}, {tp: committed}, later, 0.0)
    return {key[2]: count for key, count in found.attempts.items() if count}


def state_of(store: ImageStore, key: RecordKey, prefix: str = "") -> State | None:
    """The record's state in any journal that lists it."""
    for journal in journals(store, prefix).values():
        if key in journal.entries:
            return journal.entries[key].state
    return None
