"""Progress events: throttled per request (first and last step always), trace carried, nothing
sent when PROGRESS_TOPIC is empty."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from consumer.ops.metrics import WorkerMetrics
from consumer.output.config import OutputConfig
from consumer.output.progress import ProgressReporter
from consumer.settings import Settings
from tests.unit.fake_kafka import FakeBroker, FakeProducer

TRACE = [("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")]


def reporter(topic: str = "progress") -> tuple[ProgressReporter, FakeBroker]:
    broker = FakeBroker()
    settings = Settings(_env_file=None, progress_topic=topic)  # type: ignore[call-arg]
    producer: Any = FakeProducer(broker)
    return ProgressReporter(OutputConfig.from_settings(settings), producer, WorkerMetrics()), broker


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0.01)


async def test_steps_are_throttled_but_first_and_last_always_go() -> None:
    progress, broker = reporter()
    progress.queued("r1", TRACE)
    progress.started(["r1"], 50)
    thread = threading.Thread(
        target=lambda: [progress.step_from_thread(["r1"], s, 50) for s in range(1, 51)]
    )
    thread.start()
    thread.join()
    await settle()
    progress.finished("r1")
    await settle()
    events = [json.loads(v or b"") for v in broker.values("progress")]
    stages = [e["stage"] for e in events]
    steps = [e["step"] for e in events if e["stage"] == "step"]
    assert stages[:2] == ["queued", "started"] and stages[-1] == "finished"
    assert steps[0] == 1 and steps[-1] == 50 and len(steps) < 10  # 50 steps in moments
    for log in broker.logs.values():
        assert all(dict(r.headers or ()).get("traceparent") == TRACE[0][1] for r in log)


async def test_an_empty_progress_topic_sends_nothing() -> None:
    progress, broker = reporter(topic="")
    progress.queued("r1", [])
    progress.step_from_thread(["r1"], 1, 1)
    progress.finished("r1")
    await settle()
    assert not broker.logs


async def test_requests_that_never_finish_do_not_grow_the_bookkeeping() -> None:
    """A request released by a rebalance or abandoned at shutdown never gets its `finished`."""
    from consumer.output.progress import MAX_TRACKED

    progress, _ = reporter()
    for index in range(MAX_TRACKED + 500):
        progress.queued(f"r{index}", TRACE)
        progress._step([f"r{index}"], 1, 2)
    assert len(progress._trace) == MAX_TRACKED and len(progress._last_step) == MAX_TRACKED
