"""The priority lane (PRIORITY_TOPIC): the ordering rules, pure, then a real Worker on the
in-memory broker, fake engine, local store."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

import consumer.client.submit
from consumer.__main__ import main
from consumer.client.generation_client import GenerationClient
from consumer.generation.batch_queue import BatchQueue
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.scheduler import Scheduler
from consumer.intake.lanes import Lanes
from consumer.settings import Settings
from tests.unit.fake_kafka import FakeBroker, FakeConsumer
from tests.unit.harness import P0, PRIORITY, TOPIC, U0, Harness, event, running
from tests.unit.test_scheduler import never_ending, work

pytestmark = pytest.mark.timeout(60)


# --- the queue: urgent batches first, each lane oldest first -------------------------------------


def lanes_queue(*batches: str, max_skips: int = 2) -> BatchQueue[str]:
    """Batches named `<model><lane>`: `aU` is urgent work for model a, `aR` regular."""
    queue: BatchQueue[str] = BatchQueue(
        model_of=lambda batch: batch[0][0], max_skips=max_skips, urgent=lambda b: b[0][1] == "U"
    )
    queue.extend([name] for name in batches)
    return queue


def drain(queue: BatchQueue[str], loaded: set[str]) -> list[str]:
    return [queue.pop(loaded)[0] for _ in range(len(queue))]


def test_urgent_batches_start_before_older_regular_ones_each_lane_oldest_first() -> None:
    queue = lanes_queue("aR", "bR", "aU", "cR", "bU")
    assert queue.urgent == 2 and len(queue) == 5
    assert [b[0] for b in queue] == ["aU", "bU", "aR", "bR", "cR"]
    assert drain(queue, loaded=set()) == ["aU", "bU", "aR", "bR", "cR"]


def test_urgent_work_for_a_model_not_loaded_still_goes_before_regular_work_that_is() -> None:
    queue = lanes_queue("aR", "aR", "bU")
    assert queue.peek(loaded={"a"}) == ["bU"]
    assert drain(queue, loaded={"a"}) == ["bU", "aR", "aR"]


def test_within_the_urgent_lane_the_loaded_model_is_preferred_with_the_same_bound() -> None:
    queue = lanes_queue("aU", "bU", "bU", "bU", "bR")
    assert drain(queue, loaded={"b"}) == ["bU", "bU", "aU", "bU", "bR"]  # "aU" skipped twice


def test_urgent_work_does_not_count_as_a_skip_of_the_oldest_regular_batch() -> None:
    queue = lanes_queue("aR", "bR", "bR", "bR", max_skips=1)
    assert queue.pop({"b"}) == ["bR"]  # "aR" passed over once: its bound
    queue.extend([["bU"], ["bU"]])
    assert drain(queue, loaded={"b"}) == ["bU", "bU", "aR", "bR", "bR"]


def test_take_if_takes_from_both_lanes() -> None:
    queue = lanes_queue("aR", "aU", "bR", "bU")
    assert queue.take_if(lambda b: b[0][0] == "a") == [["aU"], ["aR"]]
    assert [b[0] for b in queue] == ["bU", "bR"] and queue.urgent == 1


def test_without_an_urgent_rule_the_queue_is_one_lane() -> None:
    queue: BatchQueue[str] = BatchQueue(model_of=lambda batch: batch[0])
    queue.extend([["x"], ["y"]])
    assert queue.urgent == 0 and drain(queue, loaded=set()) == ["x", "y"]


# --- the scheduler: room of its own, starts first, suspects alike -------------------------------


def urgent_scheduler(slots: int, lookahead: int) -> Scheduler:
    return Scheduler(slots, lookahead, list, urgent=lambda b: b[0].record.topic == PRIORITY)


def priority_work(request_id: str, attempts: int = 0) -> Any:
    item = work(request_id, attempts=attempts)
    object.__setattr__(item.record, "topic", PRIORITY)
    return item


def test_urgent_room_counts_only_urgent_batches_waiting() -> None:
    scheduler = urgent_scheduler(slots=1, lookahead=2)
    scheduler.add([[work("r1")], [work("r2")], [work("r3")]])
    assert scheduler.room() == 0 and scheduler.urgent_room() == 3
    scheduler.add([[priority_work("p1")], [priority_work("p2")]])
    assert scheduler.room() == -2 and scheduler.urgent_room() == 1


async def test_the_scheduler_starts_urgent_batches_first() -> None:
    started: list[str] = []
    scheduler = urgent_scheduler(slots=2, lookahead=0)
    scheduler.add([[work("r1")], [work("r2")], [priority_work("p1")]])
    scheduler.start_ready(never_ending(started))
    await _settle()
    assert started == ["p1", "r1"]
    scheduler.in_flight.cancel()
    await scheduler.in_flight.wait(1.0)


async def test_an_urgent_suspect_still_waits_for_an_empty_flight_and_runs_alone() -> None:
    started: list[str] = []
    scheduler = urgent_scheduler(slots=2, lookahead=0)
    scheduler.add([[work("r1")]])
    scheduler.start_ready(never_ending(started))
    scheduler.add([[priority_work("suspect", attempts=1)], [work("r2")]])
    scheduler.start_ready(never_ending(started))
    await _settle()
    assert started == ["r1"]  # the suspect is next, and waits: nothing starts beside it
    scheduler.in_flight.cancel()
    await scheduler.in_flight.wait(1.0)
    scheduler.start_ready(never_ending(started))
    await _settle()
    assert started == ["r1", "suspect"]
    scheduler.in_flight.cancel()
    await scheduler.in_flight.wait(1.0)


async def _settle() -> None:
    import asyncio

    for _ in range(3):
        await asyncio.sleep(0)


# --- lanes: what is subscribed, split and paused ------------------------------------------------


def test_lanes_split_records_and_name_the_topics() -> None:
    lanes = Lanes(TOPIC, PRIORITY)
    assert lanes.topics == [TOPIC, PRIORITY]
    broker = FakeBroker()
    records = [broker.append(t, 0, b"x") for t in (TOPIC, PRIORITY, TOPIC, PRIORITY)]
    urgent, regular = lanes.split(records)
    assert [r.topic for r in urgent] == [PRIORITY] * 2 and [r.topic for r in regular] == [TOPIC] * 2
    assert lanes.lane(PRIORITY) == "priority" and lanes.lane(TOPIC) == "regular"


def test_an_empty_priority_topic_is_no_lane() -> None:
    lanes = Lanes(TOPIC, "")
    assert lanes.topics == [TOPIC] and not lanes.urgent("")
    assert lanes.priority_partitions([P0, TopicPartition("", 0)]) == []


async def test_the_gate_pauses_and_resumes_each_lane_on_its_own() -> None:
    consumer = FakeConsumer(FakeBroker(), {P0, U0})
    consumer._listener = _NoListener()
    await consumer.start()
    lanes = Lanes(TOPIC, PRIORITY)
    lanes.gate(consumer, regular_open=False, priority_open=True)  # type: ignore[arg-type]
    assert consumer.paused() == {P0}
    lanes.gate(consumer, regular_open=False, priority_open=False)  # type: ignore[arg-type]
    assert consumer.paused() == {P0, U0}
    lanes.gate(consumer, regular_open=True, priority_open=True)  # type: ignore[arg-type]
    assert consumer.paused() == set()


class _NoListener:
    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        pass


def test_a_priority_topic_equal_to_the_request_topic_is_refused() -> None:
    with pytest.raises(ValueError, match="PRIORITY_TOPIC"):
        Settings(_env_file=None, request_topic="same", priority_topic="same")  # type: ignore[call-arg]
    assert Settings(_env_file=None, priority_topic="").priority_topic == ""  # type: ignore[call-arg]


# --- the worker ----------------------------------------------------------------------------------


class GatedEngine(FakeEngine):
    """The call for `held` blocks until `release` is set (deterministic: the test decides what
    has arrived while it runs)."""

    def __init__(self, held: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.held = held
        self.release = threading.Event()
        self.entered = threading.Event()  # the held call began

    def generate(self, jobs: Any, timeout_seconds: float, *args: Any) -> Any:
        if any(job.request_id == self.held for job in jobs):
            self.entered.set()
            self.release.wait(30)
        return super().generate(jobs, timeout_seconds, *args)


async def test_a_busy_worker_takes_priority_requests_and_starts_them_before_regular_ones(
    tmp_path: Path,
) -> None:
    engine = GatedEngine("r0")
    h = Harness(tmp_path, engine, partitions={P0, U0}, max_batches_in_flight=1, batch_lookahead=2)
    regular = [f"r{i}" for i in range(6)]
    for name in regular:
        h.broker.append(TOPIC, 0, event(name))
    try:
        async with running(h):
            await h.wait(engine.entered.is_set, "r0 running")
            await h.wait(lambda: h.worker._scheduler.holds("r2"), "the lookahead taken")
            assert P0 in h.consumer.paused() and U0 not in h.consumer.paused()
            for name in ("p0", "p1"):
                h.broker.append(PRIORITY, 0, event(name, seed=7))
            await h.wait(lambda: h.worker._scheduler.holds("p1"), "priority taken while busy")
            engine.release.set()
            await h.wait(lambda: h.broker.committed.get(P0) == len(regular), "regular committed")
            await h.wait(lambda: h.broker.committed.get(U0) == 2, "priority committed")
    finally:
        engine.release.set()
    assert h.batches == [["r0"], ["p0"], ["p1"], *[[name] for name in regular[1:]]]
    results = h.results()
    assert sorted(results) == sorted([*regular, "p0", "p1"])
    assert all(len(rs) == 1 and rs[0].status == "completed" for rs in results.values())
    lag = h.worker.metrics.priority_consumer_lag.labels("0")._value.get()  # type: ignore[attr-defined]
    assert lag == 0


async def test_a_poll_returning_both_lanes_starts_the_priority_ones_first(tmp_path: Path) -> None:
    """Records already waiting in both topics: each lane is triaged and batched on its own
    (no batch mixes them), priority first."""
    h = Harness(tmp_path, FakeEngine(), partitions={P0, U0}, max_batch_size=4, batch_lookahead=2)
    for name in ("r0", "r1", "r2"):
        h.broker.append(TOPIC, 0, event(name))
    for name in ("p0", "p1"):
        h.broker.append(PRIORITY, 0, event(name))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 3, "regular committed")
        await h.wait(lambda: h.broker.committed.get(U0) == 2, "priority committed")
    assert h.batches == [["p0", "p1"], ["r0", "r1", "r2"]]
    latency = h.worker.metrics.registry.get_sample_value
    assert latency("request_latency_seconds_count", {"lane": "priority"}) == 2
    assert latency("request_latency_seconds_count", {"lane": "regular"}) == 3


async def test_a_rebalance_gives_back_priority_work_not_started_and_takes_it_again_once(
    tmp_path: Path,
) -> None:
    """An eager rebalance while priority requests wait: they are released (not answered),
    fetched again when their partition comes back, still started first, answered once, and the
    priority partition is committed to its end."""
    engine = GatedEngine("r0")
    h = Harness(tmp_path, engine, partitions={P0, U0}, max_batches_in_flight=1, batch_lookahead=2)
    regular = [f"r{i}" for i in range(4)]
    for name in regular:
        h.broker.append(TOPIC, 0, event(name))
    try:
        async with running(h):
            await h.wait(engine.entered.is_set, "r0 running")
            for name in ("p0", "p1"):
                h.broker.append(PRIORITY, 0, event(name, seed=7))
            await h.wait(lambda: h.worker._scheduler.holds("p1"), "priority taken while busy")
            await h.consumer.rebalance({P0, U0})  # r0 still runs: its partition's work waits
            assert h.worker.metrics.partition_revocations._value.get() == 1  # type: ignore[attr-defined]
            await h.wait(lambda: h.worker._scheduler.holds("p1"), "priority taken again")
            engine.release.set()
            await h.wait(lambda: h.broker.committed.get(P0) == len(regular), "regular committed")
            await h.wait(lambda: h.broker.committed.get(U0) == 2, "priority committed")
    finally:
        engine.release.set()
    assert h.batches == [["r0"], ["p0"], ["p1"], *[[name] for name in regular[1:]]]
    results = h.results()
    assert sorted(results) == sorted([*regular, "p0", "p1"])
    assert all(len(rs) == 1 for rs in results.values())


async def test_without_a_priority_topic_the_worker_reads_the_request_topic_alone(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine(), priority_topic="")
    subscribed: list[list[str]] = []
    original = h.consumer.subscribe
    h.consumer.subscribe = lambda topics, listener: (  # type: ignore[method-assign]
        subscribed.append(list(topics)),
        original(topics, listener),
    )
    h.broker.append(TOPIC, 0, event("plain"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 1, "committed")
    assert subscribed == [[TOPIC]]


# --- the producer side ---------------------------------------------------------------------------


async def test_the_client_sends_priority_requests_to_the_priority_topic() -> None:
    settings = Settings(_env_file=None, request_topic="bulk", priority_topic="now")  # type: ignore[call-arg]
    sent: list[str] = []

    async def send(topic: str, key: str, value: bytes, headers: Any) -> None:
        sent.append(topic)

    plain = GenerationClient(settings, listen=False)
    urgent = GenerationClient(settings, listen=False, priority=True)
    for client in (plain, urgent):
        client._send = send  # type: ignore[method-assign]
        await client.submit({"prompt": "p"})
        await client.submit({"prompt": "p"}, priority=not client.priority)
    assert sent == ["bulk", "now", "now", "bulk"]
    no_lane = Settings(_env_file=None, priority_topic="")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="PRIORITY_TOPIC"):
        await GenerationClient(no_lane, listen=False).submit({"prompt": "p"}, priority=True)


def test_submit_priority_goes_to_the_priority_lane_and_needs_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(
        consumer.client.submit, "run_submit", lambda *args: calls.append(args) or None
    )
    assert main(["submit", "a lighthouse", "--priority", "--wait", "1"]) == 2  # no result
    assert calls and calls[0][-1] is True
    monkeypatch.setenv("PRIORITY_TOPIC", "")
    calls.clear()
    assert main(["submit", "a lighthouse", "--priority"]) == 2
    assert not calls and "PRIORITY_TOPIC is empty" in capsys.readouterr().err
