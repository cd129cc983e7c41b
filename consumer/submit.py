"""`python -m consumer submit`: produce one request and wait for its result event."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer, TopicPartition

from consumer import kafka_io
from consumer.settings import Settings
from schemas import GenerationResult


async def submit_and_wait(
    settings: Settings, request: dict[str, object], wait_seconds: float
) -> GenerationResult | None:
    """Listen on the result topic from its current end, then send; None if no result in time."""
    give_up = asyncio.Event()
    asyncio.get_running_loop().call_later(wait_seconds, give_up.set)
    try:
        producer = await kafka_io.start_producer(settings, give_up)
    except kafka_io.StopRequested:
        return None  # no broker within the wait
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        **kafka_io.security_options(settings),
    )
    try:
        await consumer.start()
        partitions = await producer.partitions_for(settings.result_topic)  # creates it if need be
        consumer.assign([TopicPartition(settings.result_topic, p) for p in sorted(partitions)])
        await consumer.seek_to_end()
        for tp in consumer.assignment():
            await consumer.position(tp)  # pin the end before the request goes out
        request_id = str(request["request_id"])
        await producer.send_and_wait(
            settings.request_topic, key=request_id.encode(), value=json.dumps(request).encode()
        )
        print(f"submitted {request_id} to {settings.request_topic}", file=sys.stderr)
        return await _wait_for(consumer, request_id, wait_seconds)
    finally:
        await consumer.stop()
        await producer.stop()


async def _wait_for(
    consumer: AIOKafkaConsumer, request_id: str, wait_seconds: float
) -> GenerationResult | None:
    started = time.monotonic()
    key = request_id.encode()
    interactive = sys.stderr.isatty()
    while (elapsed := time.monotonic() - started) < wait_seconds:
        if interactive:
            print(
                f"\rwaiting for the result... {elapsed:4.0f}s", end="", file=sys.stderr, flush=True
            )
        elif int(elapsed) % 5 == 0:
            print(f"waiting for the result... {elapsed:.0f}s", file=sys.stderr, flush=True)
        batches = await consumer.getmany(timeout_ms=1000)
        for record in (r for rs in batches.values() for r in rs):
            if record.key == key:
                prefix = "\r" if interactive else ""
                print(f"{prefix}result after {time.monotonic() - started:.1f}s   ", file=sys.stderr)
                return GenerationResult.model_validate_json(record.value)
    print("", file=sys.stderr)
    return None


def download(url: str, target: Path) -> Path:
    """Fetch an image URL (http(s) presigned or BASE_URL, or file://) to `target`."""
    parsed = urlparse(url)
    target.parent.mkdir(parents=True, exist_ok=True)
    if parsed.scheme == "file":
        shutil.copyfile(urllib.request.url2pathname(parsed.path), target)
    elif parsed.scheme in ("http", "https"):
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310 - scheme checked
            target.write_bytes(response.read())
    else:
        raise ValueError(f"cannot download a {parsed.scheme!r} URL")
    return target


def run_submit(
    settings: Settings, request: dict[str, object], wait: float
) -> GenerationResult | None:
    return asyncio.run(submit_and_wait(settings, request, wait))
