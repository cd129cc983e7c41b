"""What an attempt journal holds, and what a new owner concludes from another worker's: pure.

A journal (journal.py) lists the records one worker has taken into a batch and not yet seen
committed, each with its state and the crashes on record before this run:
- NEXT: recorded while the batch before it still generates; its engine call has not begun;
- ENGINE: its engine call has begun;
- HELD: not running here: left at a drain, released at a rebalance, answered but its commit not
  landed yet, or carried over from another worker's journal. Never a crash.

Read by the next owner of a partition: a journal whose lease has lapsed belongs to a worker that
stopped without letting go (kill -9, the OOM killer): its ENGINE entries were running when it
died, one crash more each; NEXT and HELD ones were not running. A journal whose lease is live
belongs to a worker that still runs: its ENGINE and NEXT entries are its work in progress (an
owner past its revoke limit), not a crash; the reader waits for them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from enum import StrEnum

# (topic, partition, offset): one record.
RecordKey = tuple[str, int, int]


class State(StrEnum):
    NEXT = "next"
    ENGINE = "engine"
    HELD = "held"


@dataclass(frozen=True)
class Entry:
    request_id: str
    attempts: int  # crashes on record before this run
    state: State
    at: float  # time.time() of the entry's last change


@dataclass
class Journal:
    owner: str
    lease_until: float  # time.time() until which the owner vouches it is alive
    entries: dict[RecordKey, Entry] = field(default_factory=dict)

    def live(self, now: float, skew: float) -> bool:
        """The owner may still be running (clocks may differ by `skew` seconds: in doubt, live)."""
        return now < self.lease_until + skew

    def to_bytes(self) -> bytes:
        """{"owner": ..., "lease_until": ..., "entries": [[topic, partition, offset,
        request_id, attempts, state, at], ...]}, the entries in record order."""
        head = json.dumps({"owner": self.owner, "lease_until": round(self.lease_until, 3)})
        rows = ",".join(_row(key, entry) for key, entry in sorted(self.entries.items()))
        return f'{head[:-1]}, "entries": [{rows}]}}'.encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Journal:
        """Raises ValueError (KeyError, TypeError included) for what is not a journal."""
        try:
            document = json.loads(data)
            entries = {
                (str(topic), int(partition), int(offset)): Entry(
                    str(request_id), int(attempts), State(state), float(at)
                )
                for topic, partition, offset, request_id, attempts, state, at in document["entries"]
            }
            return cls(str(document["owner"]), float(document["lease_until"]), entries)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an attempt journal: {exc}") from None


@functools.lru_cache(maxsize=4096)
def _row(key: RecordKey, entry: Entry) -> str:
    """One entry as JSON, made once: a journal is written a few times a batch, and most of its
    entries have not changed since the last write."""
    topic, partition, offset = key
    state, at = entry.state.value, round(entry.at, 3)
    return json.dumps([topic, partition, offset, entry.request_id, entry.attempts, state, at])


@dataclass
class Inheritance:
    """What a new owner learns from other workers' journals about the records now its own."""

    attempts: dict[RecordKey, int] = field(default_factory=dict)  # crashes on record
    busy: dict[RecordKey, str] = field(default_factory=dict)  # running on a live owner: its key

    def add(self, key: RecordKey, attempts: int) -> None:
        # The largest count of any source: a record found in two journals (carried over by one
        # owner, still listed by the dead one) is not counted twice.
        self.attempts[key] = max(self.attempts.get(key, 0), attempts)


def inherit(
    journals: dict[str, Journal],
    mine: set[tuple[str, int]],
    committed: dict[tuple[str, int], int],
    now: float,
    skew: float,
) -> Inheritance:
    """What the journals (by object key) say about the records of partitions `mine` that are not
    committed yet (`committed`: each partition's committed offset; absent: none)."""
    found = Inheritance()
    for journal_key, journal in journals.items():
        live = journal.live(now, skew)
        for key, entry in journal.entries.items():
            topic, partition, offset = key
            if (topic, partition) not in mine or offset < committed.get((topic, partition), 0):
                continue
            if live and entry.state is not State.HELD:
                found.busy[key] = journal_key
            else:
                crashed = not live and entry.state is State.ENGINE
                found.add(key, entry.attempts + (1 if crashed else 0))
    return found


def settled(
    journal: Journal, mine: set[tuple[str, int]], now: float, skew: float
) -> Journal | None:
    """A lapsed journal without the entries of partitions `mine` (carried over by the reader):
    what to write back; None when nothing is left (delete it). A live journal is its owner's to
    change: returned as it is."""
    if journal.live(now, skew):
        return journal
    left = {key: entry for key, entry in journal.entries.items() if (key[0], key[1]) not in mine}
    if not left:
        return None
    return Journal(journal.owner, journal.lease_until, left)
