"""Small bounded helpers for the Kafka integration tests (all talk to 127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumer.devtools.services import SeaweedS3, create_topics
from consumer.generation.engine import Engine
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.intake.kafka_io import leave_group
from consumer.settings import Settings
from consumer.worker import Worker
from schemas import GenerationResult
from storage import ImageStore, build_store


def request(request_id: str, prompt: str = "a lighthouse", **params: Any) -> bytes:
    body = {
        "request_id": request_id,
        "prompt": prompt,
        "params": {"width": 256, "height": 256, **params},
    }
    return json.dumps(body).encode()


async def produce(
    bootstrap: str, topic: str, values: Iterable[bytes | None], key: bytes | None = None
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    await producer.start()
    try:
        for value in values:
            # A null value needs a key (aiokafka refuses a record with neither).
            record_key = key if key is not None or value is not None else b"tombstone"
            await producer.send_and_wait(
                topic, value=value, key=record_key, headers=[("origin", b"test")]
            )
    finally:
        await producer.stop()


async def collect(bootstrap: str, topic: str, count: int, timeout: float = 90.0) -> list[Any]:
    """Read `topic` from the beginning until `count` records arrived or `timeout` passed."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return records


async def collect_until(bootstrap: str, topic: str, ids: set[str], timeout: float) -> list[Any]:
    """Read `topic` from the beginning until a result for every id in `ids` arrived."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not ids <= set(results(records)) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            records += [r for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    return records


def results(records: list[Any]) -> dict[str, list[GenerationResult]]:
    by_id: dict[str, list[GenerationResult]] = {}
    for record in records:
        result = GenerationResult.model_validate_json(record.value)
        by_id.setdefault(result.request_id or "", []).append(result)
    return by_id


async def committed_and_end(
    bootstrap: str, group: str, topic: str
) -> tuple[dict[int, int], dict[int, int]]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        end = await consumer.end_offsets(tps)
        committed = {tp.partition: (await consumer.committed(tp)) or 0 for tp in tps}
        return committed, {tp.partition: offset for tp, offset in end.items()}
    finally:
        await consumer.stop()


def download(url: str) -> bytes:
    assert url.startswith(("http://127.0.0.1", "http://localhost")), url  # local only
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, engine: Engine | None = None, store: ImageStore | None = None
) -> AsyncIterator[Worker]:
    async with worker_and_task(settings, engine, store) as (worker, _):
        yield worker


@contextlib.asynccontextmanager
async def worker_and_task(
    settings: Settings, engine: Engine | None = None, store: ImageStore | None = None
) -> AsyncIterator[tuple[Worker, asyncio.Task[None]]]:
    """A worker running in this loop, and the task that runs it (done = the worker stopped)."""
    engine = engine or DiffusersEngine(settings.engine_config())
    worker = Worker(settings, engine, store or build_store(settings))
    task = asyncio.create_task(worker.run())
    try:
        yield worker, task
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as the environment variables a worker process reads."""
    return settings.to_env()


async def produce_tracked(
    bootstrap: str, topic: str, events: dict[str, bytes]
) -> dict[str, tuple[int, int]]:
    """Produce keyed by request id; return where each landed: id -> (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    placed = {}
    try:
        for request_id, value in events.items():
            meta = await producer.send_and_wait(topic, value=value, key=request_id.encode())
            placed[request_id] = (meta.partition, meta.offset)
    finally:
        await producer.stop()
    return placed


BACKLOG = 12


async def backlog(settings: Settings) -> dict[str, tuple[int, int]]:
    await create_topics(settings.kafka_bootstrap_servers, [settings.request_topic], 2)
    # 8 steps at 256x256: long enough that a signal lands mid-backlog.
    events = {f"job-{i}": request(f"job-{i}", seed=i, steps=8) for i in range(BACKLOG)}
    return await produce_tracked(settings.kafka_bootstrap_servers, settings.request_topic, events)


async def assert_nothing_committed_without_a_result(
    settings: Settings, placed: dict[str, tuple[int, int]]
) -> set[str]:
    """Every request below a committed offset must already have its result published."""
    bootstrap = settings.kafka_bootstrap_servers
    committed, _ = await committed_and_end(bootstrap, settings.group_id, settings.request_topic)
    below = {rid for rid, (p, off) in placed.items() if off < committed.get(p, 0)}
    published = set(
        results(await collect(bootstrap, settings.result_topic, len(below), timeout=10))
    )
    assert below <= published, f"committed without a result: {sorted(below - published)}"
    return published


async def consume_and_commit(
    bootstrap: str, topic: str, group: str, count: int, timeout: float = 60.0
) -> list[bytes]:
    """As a member of `group`, read `count` records, committing after each batch; then leave."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
    )
    values: list[bytes] = []
    async with asyncio.timeout(timeout):
        await consumer.start()
        try:
            while len(values) < count:
                batch = await consumer.getmany(timeout_ms=500, max_records=count - len(values))
                for tp, records in batch.items():
                    values += [r.value for r in records]
                    await consumer.commit({tp: records[-1].offset + 1})
            await leave_group(consumer)  # else the next member waits out our session
        finally:
            await consumer.stop()
    return values


def store_of_its_own(
    make_settings: Callable[..., Settings], folder: Path, bucket: str, **overrides: Any
) -> tuple[SeaweedS3, Settings]:
    """A SeaweedFS store that a test may stop and start again (an outage), not yet started, and
    worker settings pointing at it."""
    key, secret = bucket + secrets.token_hex(4), secrets.token_hex(20)
    s3 = SeaweedS3(folder, bucket=bucket, access_key=key, secret_key=secret)
    settings = make_settings(
        s3_endpoint_url=s3.endpoint_url,
        s3_bucket=bucket,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        **overrides,
    )
    return s3, settings
