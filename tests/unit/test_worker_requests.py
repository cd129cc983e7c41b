"""How the worker treats requests (not records): duplicates, budgets, model switches. Real
Worker on the in-memory broker, fake engine, local store."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError

from consumer.generation.engine.fake import FakeEngine
from consumer.requests.journal_entries import State
from storage import StorageError
from tests.unit.harness import P0, TOPIC, Harness, event, running
from tests.unit.journals import crashes_if_all_died, seed_crashes, state_of

pytestmark = pytest.mark.timeout(60)


async def test_requests_sharing_an_id_in_one_poll_are_generated_once_and_answered_alike(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine(), max_batch_size=4, max_batch_wait_ms=50)
    for _ in range(3):
        h.broker.append(TOPIC, 0, event("twice"))
    h.broker.append(TOPIC, 0, event("other"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 4, "all four committed")
    assert sorted(r for batch in h.batches for r in batch) == ["other", "twice"]
    results = h.results()["twice"]
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert results[0].status == "completed"


class TimedEngine(FakeEngine):
    """Records when each engine call ran, to check that a suspect runs alone."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[tuple[float, float, list[str]]] = []

    def generate(self, jobs: Any, timeout_seconds: float, *args: Any) -> Any:
        started = time.monotonic()
        try:
            return super().generate(jobs, timeout_seconds, *args)
        finally:
            self.calls.append((started, time.monotonic(), [j.request_id for j in jobs]))


async def test_a_request_with_max_attempts_on_record_is_answered_without_running(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine(), max_batch_size=4)
    seed_crashes(h.store, 1, "poison", 3)
    for name in ("before", "poison", "after"):
        h.broker.append(TOPIC, 0, event(name))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 3, "all committed")
    by_id = h.results()
    (poison,) = by_id["poison"]
    assert poison.status == "failed" and poison.error is not None
    assert poison.error.code == "attempts_exhausted"
    assert by_id["before"][0].status == by_id["after"][0].status == "completed"
    assert "poison" not in [r for batch in h.batches for r in batch]
    assert crashes_if_all_died(h.store) == {}  # answered and committed: forgotten


async def test_a_suspect_runs_alone_with_nothing_else_in_flight(tmp_path: Path) -> None:
    engine = TimedEngine(step_seconds=0.1)
    h = Harness(tmp_path, engine, max_batch_size=4, max_batches_in_flight=2)
    seed_crashes(h.store, 2, "suspect", 1)
    names = ["a", "b", "suspect", "c", "d", "e"]
    for name in names:
        h.broker.append(TOPIC, 0, event(name, steps=3))
    recorded: list[dict[int, int]] = []
    in_flight: list[int] = []  # batches in flight (generating, storing, publishing) around it
    original = engine.generate

    def generate(jobs: Any, timeout_seconds: float, *args: Any) -> Any:
        suspect = jobs[0].request_id == "suspect"
        if suspect:
            recorded.append(crashes_if_all_died(h.store))
            in_flight.append(len(h.worker._scheduler.in_flight))
        try:
            return original(jobs, timeout_seconds, *args)
        finally:
            if suspect:
                in_flight.append(len(h.worker._scheduler.in_flight))

    engine.generate = generate  # type: ignore[method-assign]
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == len(names), "all committed")
    (suspect,) = [c for c in engine.calls if "suspect" in c[2]]
    assert suspect[2] == ["suspect"]
    assert in_flight == [1, 1]  # nothing else in flight while it ran
    others = [c for c in engine.calls if c is not suspect and c[2] != ["warmup"]]
    assert all(end <= suspect[0] or start >= suspect[1] for start, end, _ in others)
    assert recorded == [{2: 2}]  # this run on record before it began: a crash now is the 2nd
    assert crashes_if_all_died(h.store) == {}
    assert all(rs[0].status == "completed" for rs in h.results().values())


async def test_a_lone_request_on_an_idle_worker_is_on_record_before_it_runs(
    tmp_path: Path,
) -> None:
    """A fresh request is not looked up, but its run is on record before the engine call, and
    forgotten once its result is published and committed."""
    engine = FakeEngine()
    h = Harness(tmp_path, engine)
    seen: list[dict[int, int]] = []
    original = engine.generate

    def generate(jobs: Any, timeout_seconds: float, *args: Any) -> Any:
        if jobs[0].request_id == "lone":
            seen.append(crashes_if_all_died(h.store))
        return original(jobs, timeout_seconds, *args)

    engine.generate = generate  # type: ignore[method-assign]
    async with running(h):
        await h.wait(lambda: bool(h.worker.ready), "ready")
        h.broker.append(TOPIC, 0, event("lone"))
        await h.wait(lambda: h.broker.committed.get(P0) == 1, "committed")
    assert seen == [{0: 1}]
    assert crashes_if_all_died(h.store) == {}
    assert h.results()["lone"][0].status == "completed"


async def test_only_a_batch_the_engine_runs_would_count_a_crash(tmp_path: Path) -> None:
    """A batch waiting for the engine behind another (MAX_BATCHES_IN_FLIGHT=2) is on record as
    NEXT: a worker dying now crashed running the first, not the second. Once the engine takes
    the second, it is on record as ENGINE (written without the engine waiting for it)."""
    engine = FakeEngine(step_seconds=0.1)
    h = Harness(tmp_path, engine, max_batch_size=1, max_batches_in_flight=2)
    names = ["first", "second", "third"]
    seen: dict[str, dict[int, int]] = {}
    original = engine.generate

    def generate(jobs: Any, timeout_seconds: float, *args: Any) -> Any:
        if jobs[0].request_id == "first":
            time.sleep(0.3)  # the second batch is recorded meanwhile
            seen["first"] = crashes_if_all_died(h.store)
        return original(jobs, timeout_seconds, *args)

    engine.generate = generate  # type: ignore[method-assign]
    for name in names:
        h.broker.append(TOPIC, 0, event(name, steps=8))
    async with running(h):
        await h.wait(lambda: ["second"] in h.batches, "the engine runs the second")
        await h.wait(lambda: state_of(h.store, (TOPIC, 0, 1)) is State.ENGINE, "second: ENGINE")
        await h.wait(lambda: h.broker.committed.get(P0) == len(names), "all committed")
    assert seen["first"] == {0: 1}
    assert state_of(h.store, (TOPIC, 0, 1)) is not State.NEXT
    assert crashes_if_all_died(h.store, committed=3) == {}


async def test_a_request_sent_twice_is_answered_with_the_first_ones_images(
    tmp_path: Path,
) -> None:
    """A second record (a new offset: no redelivery) is fresh, so it is not looked up before it
    runs; its first image finds the key taken (`create`), and the stored images answer it:
    nothing is overwritten."""
    h = Harness(tmp_path, FakeEngine())
    h.broker.append(TOPIC, 0, event("again", seed=None))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 1, "the first delivery")
        key = h.results()["again"][0].images[0].key
        written = h.store.path_for(key).stat().st_mtime_ns
        h.broker.append(TOPIC, 0, event("again", seed=None))  # sent again
        await h.wait(lambda: h.broker.committed.get(P0) == 2, "the second delivery")
    first, second = h.results()["again"]
    assert second.audit is not None and "served from the store" in (second.audit.note or "")
    assert [i.key for i in first.images] == [i.key for i in second.images]
    assert [i.seed for i in first.images] == [i.seed for i in second.images]
    assert h.store.path_for(key).stat().st_mtime_ns == written  # not written again


async def test_a_taken_key_is_never_written_over_while_the_store_cannot_say_whose_it_is(
    tmp_path: Path,
) -> None:
    """The second record finds its key taken, and the listing that would say whose it is fails
    for a passing reason: it is tried again (with the store-outage backoff), not written over."""
    h = Harness(tmp_path, FakeEngine(), storage_retry_max_backoff_seconds=0.2)
    h.broker.append(TOPIC, 0, event("again", seed=None))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 1, "the first delivery")
        key = h.results()["again"][0].images[0].key
        written = h.store.path_for(key).stat().st_mtime_ns
        listing, failures = h.store.keys_in, [2]

        def flaky(folder: str, limit: int) -> list[str]:
            if failures[0]:
                failures[0] -= 1
                raise StorageError("connection reset", retryable=True)
            return listing(folder, limit)

        h.store.keys_in = flaky  # type: ignore[method-assign]
        h.broker.append(TOPIC, 0, event("again", seed=None))  # sent again
        await h.wait(lambda: h.broker.committed.get(P0) == 2, "the second delivery")
    second = h.results()["again"][1]
    assert failures == [0] and second.status == "completed"
    assert second.audit is not None and "served from the store" in (second.audit.note or "")
    assert h.store.path_for(key).stat().st_mtime_ns == written  # not written over


async def test_a_redelivered_record_is_answered_from_the_store_without_generating(
    tmp_path: Path,
) -> None:
    """The same record read again (its commit refused: it may have run) is looked up first."""
    h = Harness(tmp_path, FakeEngine())

    async def refused(offsets: Any) -> None:
        raise CommitFailedError("another member owns the partition now")

    h.consumer.commit = refused  # type: ignore[method-assign]
    h.broker.append(TOPIC, 0, event("again", seed=None))
    async with running(h):
        await h.wait(lambda: "again" in h.results(), "the first delivery")
    h2 = Harness(tmp_path, FakeEngine())
    h2.broker, h2.consumer = h.broker, type(h.consumer)(h.broker, {P0})
    h2.worker = type(h.worker)(h2.settings, h2.engine, h2.store, clients=(h2.consumer, h.producer))
    async with running(h2):
        await h2.wait(lambda: len(h.results()["again"]) == 2, "the second delivery")
    first, second = h.results()["again"]
    assert h2.batches == []  # not generated again
    assert second.audit is not None and "served from the store" in (second.audit.note or "")
    assert [i.key for i in first.images] == [i.key for i in second.images]
    assert h2.worker.metrics.stored_answers._value.get() == 1


async def test_out_of_memory_splits_the_batch_and_a_request_too_large_alone_fails(
    tmp_path: Path,
) -> None:
    """The fake engine raises the real torch.cuda.OutOfMemoryError above one image per call."""
    h = Harness(tmp_path, FakeEngine(oom_above_images=1), max_batch_size=4, max_batch_wait_ms=50)
    for name in ("s1", "s2", "s3"):
        h.broker.append(TOPIC, 0, event(name))
    h.broker.append(TOPIC, 0, event("pair", params={"num_images": 2}))
    h.broker.append(TOPIC, 0, event("later"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 5, "all committed")
    by_id = h.results()
    assert all(by_id[n][0].status == "completed" for n in ("s1", "s2", "s3", "later"))
    (pair,) = by_id["pair"]
    assert pair.status == "failed" and pair.error is not None
    assert pair.error.code == "out_of_memory"
    assert any(len(b) > 1 for b in h.batches)  # they were batched first
    assert [b for b in h.batches if "s1" in b][-1] == ["s1"]  # retried alone


async def test_the_request_finished_line_says_where_the_time_went(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Logged once the result is published, with the worker's stages in milliseconds."""
    h = Harness(tmp_path, FakeEngine(step_seconds=0.05))
    h.broker.append(TOPIC, 0, event("timed", steps=2))
    with caplog.at_level(logging.INFO, logger="consumer.requests"):
        async with running(h):
            await h.wait(lambda: h.broker.committed.get(P0) == 1, "committed")
    (line,) = [r for r in caplog.records if r.getMessage() == "request finished"]
    stages = line.__dict__["stages_ms"]
    names = ["preflight", "queued", "record", "generate", "store", "publish"]
    assert list(stages) == names and all(value >= 0 for value in stages.values())
    assert stages["generate"] >= 100  # two steps of 50 ms
    assert stages["record"] < stages["generate"]


async def test_commits_that_arrive_while_one_is_in_flight_are_made_as_one(
    tmp_path: Path,
) -> None:
    """Each request commits once its result is published; a batch's requests finish together,
    so their commits are coalesced rather than queued one round trip behind another."""
    h = Harness(tmp_path, FakeEngine(), max_batch_size=4, max_batch_wait_ms=50)
    commits: list[dict[Any, int]] = []
    original = h.consumer.commit

    async def slow_commit(offsets: dict[Any, int]) -> None:
        commits.append(dict(offsets))
        await asyncio.sleep(0.05)  # a broker round trip
        await original(offsets)

    h.consumer.commit = slow_commit  # type: ignore[method-assign]
    for i in range(8):
        h.broker.append(TOPIC, 0, event(f"r{i}"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 8, "all eight committed")
    assert len(commits) <= 5  # one by one, it was 7 (the first few before the batch filled)
    offsets = [c[P0] for c in commits if P0 in c]
    assert offsets == sorted(offsets)  # never backwards


async def test_a_batch_frees_its_slot_once_its_images_are_stored(tmp_path: Path) -> None:
    """MAX_BATCHES_IN_FLIGHT bounds batches generating or storing: the next batch starts while
    the previous one's results are still being published (a slow broker here)."""
    engine = TimedEngine()
    h = Harness(tmp_path, engine, max_batch_size=1, max_batches_in_flight=1)
    acknowledged: dict[str, float] = {}
    original = h.producer.send

    async def slow_acknowledgement(topic: str, value: Any = None, *args: Any, **kw: Any) -> Any:
        future = await original(topic, value, *args, **kw)
        if topic != h.settings.result_topic:
            return future
        slow: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def acknowledge() -> None:
            acknowledged[json.loads(value)["request_id"]] = time.monotonic()
            slow.set_result(None)

        asyncio.get_running_loop().call_later(0.3, acknowledge)
        return slow

    h.producer.send = slow_acknowledgement  # type: ignore[method-assign]
    h.broker.append(TOPIC, 0, event("first"))
    h.broker.append(TOPIC, 0, event("second"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 2, "both committed")
    started = {c[2][0]: c[0] for c in engine.calls if c[2] != ["warmup"]}
    assert started["second"] < acknowledged["first"]
    assert all(rs[0].status == "completed" for rs in h.results().values())
