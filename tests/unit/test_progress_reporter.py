"""Progress events: coalesced per request (the newest goes, an interval after the first held;
`finished` at once, only after an event that went), trace carried, nothing sent when
PROGRESS_TOPIC is empty."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from consumer.ops.metrics import WorkerMetrics
from consumer.output.config import OutputConfig
from consumer.output.progress import MAX_TRACKED, ProgressReporter
from consumer.settings import Settings
from tests.unit.fake_kafka import FakeBroker, FakeProducer

TRACE = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]
INTERVAL = 0.05


def reporter(
    topic: str = "progress", interval: float = INTERVAL
) -> tuple[ProgressReporter, FakeBroker]:
    broker = FakeBroker()
    settings = Settings(_env_file=None, progress_topic=topic, progress_interval_seconds=interval)  # type: ignore[call-arg]
    producer: Any = FakeProducer(broker)
    return ProgressReporter(OutputConfig.from_settings(settings), producer, WorkerMetrics()), broker


def sent(broker: FakeBroker) -> list[dict[str, Any]]:
    return [json.loads(v or b"") for v in broker.values("progress")]


async def settle(seconds: float = 0.0) -> None:
    await asyncio.sleep(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_request_gets_its_newest_event_an_interval_after_the_first_then_finished() -> None:
    progress, broker = reporter()
    progress.queued("r1", TRACE)
    progress.started(["r1"], 50)
    thread = threading.Thread(
        target=lambda: [progress.step_from_thread(["r1"], s, 50) for s in range(1, 51)]
    )
    thread.start()
    thread.join()
    await settle()
    assert sent(broker) == []  # held for the interval
    await settle(INTERVAL * 2)
    (event,) = sent(broker)  # 52 events in moments: only the newest
    assert (event["stage"], event["step"], event["total_steps"]) == ("step", 50, 50)
    progress.finished("r1")
    await settle()
    assert [e["stage"] for e in sent(broker)] == ["step", "finished"]  # at once
    for log in broker.logs.values():
        assert all(dict(r.headers or ()).get("traceparent") == TRACE[0][1] for r in log)


async def test_a_request_answered_within_the_interval_gets_no_progress_event() -> None:
    progress, broker = reporter()
    progress.queued("fast", TRACE)
    progress.started(["fast"], 1)
    progress._step(["fast"], 1, 1)
    progress.finished("fast")  # its result follows: the first thing there is to show
    await settle(INTERVAL * 2)
    assert sent(broker) == []


async def test_a_long_request_gets_at_most_one_event_per_interval() -> None:
    progress, broker = reporter()
    progress.queued("slow", TRACE)
    loop = asyncio.get_running_loop()
    started = loop.time()
    for step in range(1, 41):  # a step every INTERVAL / 4, for ten intervals
        await asyncio.sleep(INTERVAL / 4)
        progress._step(["slow"], step, 40)
    await settle(INTERVAL * 2)
    events = sent(broker)
    elapsed = loop.time() - started
    assert 3 <= len(events) <= elapsed / INTERVAL + 1
    steps = [e["step"] for e in events if e["stage"] == "step"]
    assert steps == sorted(steps) and steps[-1] == 40  # the newest always goes in the end


async def test_interval_zero_sends_each_event_at_the_next_turn_of_the_loop() -> None:
    progress, broker = reporter(interval=0)
    progress.queued("r1", TRACE)
    await settle()
    progress.started(["r1"], 2)
    await settle()
    progress._step(["r1"], 1, 2)
    await settle()
    progress.finished("r1")
    await settle()
    assert [e["stage"] for e in sent(broker)] == ["queued", "started", "step", "finished"]


async def test_an_empty_progress_topic_sends_nothing() -> None:
    progress, broker = reporter(topic="")
    progress.queued("r1", [])
    progress.step_from_thread(["r1"], 1, 1)
    progress.finished("r1")
    await settle(INTERVAL * 2)
    assert not broker.logs


async def test_requests_that_never_finish_do_not_grow_the_bookkeeping() -> None:
    """A request released by a rebalance or abandoned at shutdown never gets its `finished`."""
    progress, _ = reporter()
    for index in range(MAX_TRACKED + 500):
        progress.queued(f"r{index}", TRACE)
        progress._step([f"r{index}"], 1, 2)
    assert len(progress._followed) == MAX_TRACKED
    await settle(INTERVAL * 2)
    assert not progress._held  # sent once their time came
