"""The attempt journal (consumer/requests/journal.py, journal_entries.py): what a new owner
concludes from other workers' journals (pure), and the journal's reads and writes on a local
store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from consumer.requests.journal import AttemptJournal
from consumer.requests.journal_entries import Entry, Journal, State, inherit, settled
from storage import LocalImageStore, StorageError
from tests.unit.journals import journals, seed_crashes

T = "requests"
NOW = 1_000_000.0
MINE = {(T, 0)}


def entry(state: State, attempts: int = 0) -> Entry:
    return Entry("r", attempts, state, NOW - 100)


def lapsed(**entries: Entry) -> Journal:
    return Journal("dead", NOW - 60, {(T, 0, int(k[1:])): e for k, e in entries.items()})


def live(**entries: Entry) -> Journal:
    return Journal("alive", NOW + 20, {(T, 0, int(k[1:])): e for k, e in entries.items()})


def test_a_dead_workers_engine_entries_count_a_crash_and_its_queued_ones_none() -> None:
    dead = lapsed(o1=entry(State.ENGINE, 1), o2=entry(State.NEXT), o3=entry(State.HELD, 2))
    found = inherit({"j": dead}, MINE, {}, NOW, 0.0)
    assert found.attempts == {(T, 0, 1): 2, (T, 0, 2): 0, (T, 0, 3): 2}
    assert found.busy == {}


def test_a_live_workers_running_entries_are_busy_not_crashes() -> None:
    alive = live(o1=entry(State.ENGINE), o2=entry(State.NEXT), o3=entry(State.HELD, 1))
    found = inherit({"j": alive}, MINE, {}, NOW, 0.0)
    assert found.busy == {(T, 0, 1): "j", (T, 0, 2): "j"}
    assert found.attempts == {(T, 0, 3): 1}


def test_a_lease_within_the_clock_skew_is_live() -> None:
    dead = lapsed(o1=entry(State.ENGINE))
    assert inherit({"j": dead}, MINE, {}, NOW, 120.0).busy == {(T, 0, 1): "j"}


def test_committed_records_and_other_partitions_are_ignored() -> None:
    dead = Journal("dead", NOW - 60)
    dead.entries = {(T, 0, 1): entry(State.ENGINE), (T, 1, 9): entry(State.ENGINE)}
    assert inherit({"j": dead}, MINE, {(T, 0): 2}, NOW, 0.0).attempts == {}


def test_a_record_in_two_journals_counts_the_larger_not_the_sum() -> None:
    """The carried-over count (HELD, 2) and the dead journal not trimmed yet (ENGINE, 1)."""
    carried = lapsed(o1=entry(State.HELD, 2))
    dead = lapsed(o1=entry(State.ENGINE, 1))
    assert inherit({"a": carried, "b": dead}, MINE, {}, NOW, 0.0).attempts == {(T, 0, 1): 2}


def test_settled_trims_what_the_reader_carried_and_leaves_a_live_journal_alone() -> None:
    dead = Journal("dead", NOW - 60)
    dead.entries = {(T, 0, 1): entry(State.ENGINE), (T, 1, 9): entry(State.ENGINE)}
    left = settled(dead, MINE, NOW, 0.0)
    assert left is not None and list(left.entries) == [(T, 1, 9)]
    assert settled(lapsed(o1=entry(State.ENGINE)), MINE, NOW, 0.0) is None
    alive = live(o1=entry(State.ENGINE))
    assert settled(alive, MINE, NOW, 0.0) is alive


def test_a_journal_round_trips_and_garbage_is_refused() -> None:
    journal = lapsed(o1=entry(State.ENGINE, 1), o7=entry(State.HELD))
    assert Journal.from_bytes(journal.to_bytes()) == journal
    for garbage in (
        b"",
        b"[]",
        b'{"owner": "x"}',
        b'{"owner":"x","lease_until":1,"entries":[[1]]}',
    ):
        with pytest.raises(ValueError):
            Journal.from_bytes(garbage)


def record(offset: int, partition: int = 0) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(T, partition, offset, 0, 0, None, b"{}", None, 0, 2, ())


def journal_on(store: LocalImageStore, landed: int = -1) -> AttemptJournal:
    journal = AttemptJournal(store, "", "me", lambda partition: landed)
    journal._creates = True  # as check_store finds for a local store
    return journal


async def test_until_the_store_is_known_to_honour_create_every_record_may_have_run(
    tmp_path: Path,
) -> None:
    class Ignores(LocalImageStore):
        def create(self, *args: Any, **kwargs: Any) -> str:
            return self.put(*args, **kwargs)

    for store, honoured in (
        (LocalImageStore(tmp_path / "a"), True),
        (Ignores(tmp_path / "b"), False),
    ):
        journal = AttemptJournal(store, "", "me", lambda partition: -1)
        assert journal.may_have_run(record(0))  # not asked yet
        await journal.check_store()
        assert journal.may_have_run(record(0)) is not honoured
        assert not any(store.root.iterdir())  # the probe is gone


async def test_a_new_owner_carries_a_dead_workers_crashes_before_trimming_its_journal(
    tmp_path: Path,
) -> None:
    store = LocalImageStore(tmp_path)
    dead = seed_crashes(store, 5, "poison", 2, topic=T)
    journal = journal_on(store)
    await journal.load(MINE)
    assert journal.attempts(record(5)) == 2 and journal.may_have_run(record(5))
    assert not journal.may_have_run(record(6)) and journal.attempts(record(6)) == 0
    on_record = journals(store)
    assert dead not in on_record  # trimmed: its evidence lives on in this worker's journal
    assert on_record[journal.key].entries[(T, 0, 5)].attempts == 2


async def test_an_unreadable_store_makes_every_record_suspect(tmp_path: Path) -> None:
    class Away(LocalImageStore):
        def keys_in(self, folder: str, limit: int) -> list[str]:
            raise StorageError("store away", retryable=True)

    journal = journal_on(Away(tmp_path))
    await journal.load(MINE)
    assert journal.may_have_run(record(0)) and journal.attempts(record(0)) == 0
    assert not journal.may_have_run(record(0, partition=1))


async def test_writes_are_coalesced_and_committed_entries_dropped(tmp_path: Path) -> None:
    class Counting(LocalImageStore):
        puts = 0

        def put(self, *args: Any, **kwargs: Any) -> str:
            self.puts += 1
            time.sleep(0.05)
            return super().put(*args, **kwargs)

    store = Counting(tmp_path)
    landed = {"offset": -1}
    journal = AttemptJournal(store, "", "me", lambda partition: landed["offset"])
    batches = [[(record(i), f"r{i}")] for i in range(6)]
    await asyncio.gather(*(journal.recorded(batch, engine_busy=True) for batch in batches))
    assert store.puts <= 3  # one write, then one for everyone who arrived meanwhile
    assert len(journals(store)[journal.key].entries) == 6
    landed["offset"] = 4  # commits up to offset 3 landed
    await journal.write()
    assert sorted(k[2] for k in journals(store)[journal.key].entries) == [4, 5]


async def test_a_live_worker_is_waited_for_until_it_lets_go(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    theirs = Journal("alive", time.time() + 30, {(T, 0, 3): Entry("r", 0, State.ENGINE, 0.0)})
    key = "_attempts/alive.json"
    store.put(key, theirs.to_bytes(), "application/json")
    journal = journal_on(store)
    await journal.load(MINE)
    assert journal.busy_elsewhere([record(3), record(4)]) == [record(3)]

    async def let_go() -> None:
        await asyncio.sleep(1.5)
        theirs.entries[(T, 0, 3)] = Entry("r", 0, State.HELD, time.time())
        await asyncio.to_thread(store.put, key, theirs.to_bytes(), "application/json")

    steps: list[int] = []
    helper = asyncio.create_task(let_go())
    await asyncio.wait_for(
        journal.wait_released([record(3)], asyncio.Event(), lambda: steps.append(1)), 10
    )
    await helper
    assert journal.busy_elsewhere([record(3)]) == [] and steps
    assert journal.may_have_run(record(3)) and journal.attempts(record(3)) == 0  # not a crash


async def test_at_close_nothing_runs_and_the_lease_ends(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    journal = journal_on(store)
    await journal.recorded([(record(1), "r1")], engine_busy=False)
    mine = journals(store)[journal.key]
    assert mine.entries[(T, 0, 1)].state is State.ENGINE and mine.live(time.time(), 0.0)
    await journal.close()
    mine = journals(store)[journal.key]
    assert mine.entries[(T, 0, 1)].state is State.HELD and not mine.live(time.time(), 0.0)


async def test_a_lease_that_does_not_move_is_a_dead_worker_whatever_the_clocks_say(
    tmp_path: Path,
) -> None:
    """Its clock runs a minute ahead, so its lease looks live; it is not renewed for
    LEASE_SECONDS of this worker's time: it died running the record, one crash more."""
    store = LocalImageStore(tmp_path)
    ahead = Journal("ahead", time.time() + 60, {(T, 0, 3): Entry("r", 1, State.ENGINE, 0.0)})
    store.put("_attempts/ahead.json", ahead.to_bytes(), "application/json")
    journal = journal_on(store)
    await journal.load(MINE)
    assert journal.busy_elsewhere([record(3)]) == [record(3)]
    await asyncio.wait_for(journal.wait_released([record(3)], asyncio.Event(), lambda: None), 20)
    assert journal.attempts(record(3)) == 2


async def test_a_count_carried_over_does_not_hide_a_later_crash(tmp_path: Path) -> None:
    """Worker A died running the record (1 crash, carried over at load); worker B, whose lease
    looked live, ran it too and stopped renewing: 2 crashes, not the 1 already carried."""
    store = LocalImageStore(tmp_path)
    seed_crashes(store, 3, "r", 1, topic=T, owner="a")
    b = Journal("b", time.time() + 3, {(T, 0, 3): Entry("r", 1, State.ENGINE, 0.0)})
    store.put("_attempts/b.json", b.to_bytes(), "application/json")
    journal = journal_on(store)
    await journal.load(MINE)
    assert journal.attempts(record(3)) == 1 and journal.busy_elsewhere([record(3)])
    await asyncio.wait_for(journal.wait_released([record(3)], asyncio.Event(), lambda: None), 20)
    assert journal.attempts(record(3)) == 2
