"""A real Worker on the in-memory broker, with a fake engine and a local store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition

from consumer.generation.engine.fake import FakeEngine
from consumer.settings import Settings
from consumer.worker import Worker
from schemas import GenerationResult
from storage import LocalImageStore
from tests.unit.fake_kafka import FakeBroker, FakeConsumer, FakeProducer

TOPIC = "requests"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
PRIORITY = "requests.priority"  # PRIORITY_TOPIC
U0 = TopicPartition(PRIORITY, 0)


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "storage_backend": "local",
        "default_model": "fake",
        "app_port": 0,
        "request_topic": TOPIC,
        "priority_topic": PRIORITY,
        "result_topic": "results",
        "dlq_topic": "dlq",
        "max_batch_size": 1,
        "max_batch_wait_ms": 0,
        "max_batches_in_flight": 1,
        "batch_lookahead": 0,
        "keepalive_poll_seconds": 0.05,
        "kafka_session_timeout_ms": 1000,  # revoke bound: 0.5 s
        "drain_timeout_seconds": 5,
        "store_check_interval_seconds": 0.2,
        "control_topic": "",  # no cancels: the in-memory broker has no control topic
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def event(
    request_id: str,
    steps: int = 1,
    seed: int | None = 1,
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> bytes:
    """A request event; `params` adds to the parameters, `extra` to the top level."""
    params = {"width": 64, "height": 64, "steps": steps, **(params or {})}
    if seed is not None:
        params["seed"] = seed
    return json.dumps({"request_id": request_id, "prompt": "p", "params": params, **extra}).encode()


class Harness:
    def __init__(
        self,
        tmp_path: Path,
        engine: FakeEngine,
        partitions: set[TopicPartition] | None = None,
        **overrides: Any,
    ) -> None:
        """`partitions`: assigned at the start (default: P0)."""
        self.broker = FakeBroker()
        self.consumer = FakeConsumer(self.broker, partitions or {P0})
        self.producer = FakeProducer(self.broker)
        self.engine = engine
        self.settings = settings_for(tmp_path, **overrides)
        self.store = LocalImageStore(tmp_path / "images", None)
        clients: Any = (self.consumer, self.producer)
        self.worker = Worker(self.settings, engine, self.store, clients=clients)
        self.gauge_samples: list[float] = []

    @property
    def batches(self) -> list[list[str]]:
        """Request ids of each engine call, without the default model's warm-up."""
        return [batch for batch in self.engine.batches if batch != ["warmup"]]

    def results(self) -> dict[str, list[GenerationResult]]:
        by_id: dict[str, list[GenerationResult]] = {}
        for value in self.broker.values("results"):
            result = GenerationResult.model_validate_json(value or b"")
            by_id.setdefault(result.request_id or "", []).append(result)
        return by_id

    def in_flight(self) -> float:
        return self.worker.metrics.in_flight._value.get()  # type: ignore[attr-defined, no-any-return]

    async def wait(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            self.gauge_samples.append(self.in_flight())
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(harness.worker.run())
    try:
        yield task
    finally:
        harness.worker.request_stop()
        await asyncio.wait_for(task, 30)
