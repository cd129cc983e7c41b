"""The embedded services themselves: Tansu round trip, detached start/stop, fixture wiring."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumer.devtools.services import TansuBroker, create_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _port_open(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


async def _round_trip(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    async with asyncio.timeout(30):
        await producer.start()
        try:
            sent = await producer.send_and_wait(
                topic, b"hello", key=b"req-1", headers=[("source", b"test")]
            )
        finally:
            await producer.stop()
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topic, sent.partition)])
            record = await consumer.getone()
        finally:
            await consumer.stop()
    assert (record.key, record.value, record.offset) == (b"req-1", b"hello", sent.offset)
    assert record.headers == (("source", b"test"),)


async def _partitions(bootstrap: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    async with asyncio.timeout(15):
        await admin.start()
        try:
            described = await admin.describe_topics([topic])
        finally:
            await admin.close()
    return len(described[0]["partitions"])


async def test_tansu_topic_produce_consume_stop(tmp_path: Path) -> None:
    broker = TansuBroker(tmp_path)
    with broker:
        assert broker.ready_seconds is not None and broker.ready_seconds < 10
        assert broker.pidfile(tmp_path).exists()
        await create_topics(broker.bootstrap_servers, ["svc.test"], partitions=3)
        await create_topics(broker.bootstrap_servers, ["svc.test"], partitions=3)  # exists: ok
        assert await _partitions(broker.bootstrap_servers, "svc.test") == 3
        await _round_trip(broker.bootstrap_servers, "svc.test")
    assert not _port_open(broker.bootstrap_servers)
    assert not broker.pidfile(tmp_path).exists()
    broker.stop()  # a second stop is harmless


_DETACHED_STARTER = """
import sys
from pathlib import Path
from consumer.devtools.services import TansuBroker
broker = TansuBroker(Path(sys.argv[1])).start(detach=True)
print(broker.bootstrap_servers)
"""


def test_detached_broker_outlives_starter_and_stops_from_pidfile(tmp_path: Path) -> None:
    started = subprocess.run(
        [sys.executable, "-c", _DETACHED_STARTER, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    bootstrap = started.stdout.strip()
    try:
        info = json.loads(TansuBroker.pidfile(tmp_path).read_text())
        assert info["address"] == bootstrap
        assert _port_open(bootstrap)  # the starting process has exited; the broker has not
        assert TansuBroker.is_running(tmp_path)
    finally:
        stopped = TansuBroker.stop_from_pidfile(tmp_path)
    assert stopped is True
    assert not _port_open(bootstrap)
    assert TansuBroker.stop_from_pidfile(tmp_path) is False
    assert TansuBroker.is_running(tmp_path) is False


async def test_kafka_bootstrap_fixture_round_trip(kafka_bootstrap: str) -> None:
    await create_topics(kafka_bootstrap, ["svc.fixture"], partitions=1)
    await _round_trip(kafka_bootstrap, "svc.fixture")
