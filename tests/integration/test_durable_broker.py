"""Tansu on S3 storage: topics, records and a group's committed offsets outlive the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from consumer.devtools.processes import free_port
from consumer.devtools.services import TansuBroker, create_topics
from consumer.devtools.stack import env_file, stack_dir, stack_down, stack_up
from consumer.settings import Settings
from tests.integration.kafka_tools import committed_and_end, consume_and_commit, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

RECORDS = [f"r{i}".encode() for i in range(10)]


async def _produce_and_commit_four(bootstrap: str, topic: str, group: str) -> list[bytes]:
    await create_topics(bootstrap, [topic], partitions=2)
    await produce(bootstrap, topic, RECORDS)
    return await consume_and_commit(bootstrap, topic, group, count=4)


async def _assert_group_resumes(bootstrap: str, topic: str, group: str, first: list[bytes]) -> None:
    """The group reads exactly the six records it had not committed: nothing again, none lost."""
    # Not end offsets: Tansu 0.6 on S3 storage answers ListOffsets(latest) with 1 per partition
    # (fetches report the right high watermark); the reads below show the records are all there.
    committed, _ = await committed_and_end(bootstrap, group, topic)
    assert sum(committed.values()) == 4, "the broker forgot the group's committed offsets"
    rest = await consume_and_commit(bootstrap, topic, group, count=6)
    assert sorted(first + rest) == sorted(RECORDS)
    assert not set(first) & set(rest)


async def test_killed_broker_restarts_with_topics_and_offsets(
    durable_broker: TansuBroker,
) -> None:
    bootstrap = durable_broker.bootstrap_servers
    first = await _produce_and_commit_four(bootstrap, "durable.test", "durable-group")
    await asyncio.to_thread(durable_broker.kill)
    assert not TansuBroker.pidfile(durable_broker.data_dir).exists()
    await asyncio.to_thread(durable_broker.start)
    assert durable_broker.bootstrap_servers == bootstrap  # same port
    await _assert_group_resumes(bootstrap, "durable.test", "durable-group", first)


def _stack_settings(data_dir: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_bucket="images",
        request_topic="stack.requests",
    )


async def test_stack_down_and_up_keeps_topics_and_offsets(tmp_path: Path) -> None:
    settings = _stack_settings(tmp_path)
    bootstrap, topic, group = settings.kafka_bootstrap_servers, settings.request_topic, "stk"
    try:
        await asyncio.to_thread(stack_up, settings, 2)
        _assert_no_secret_in_pidfile_or_log(stack_dir(settings))
        _assert_env_file_fits_tansu(env_file(settings))
        first = await _produce_and_commit_four(bootstrap, topic, group)
        assert await asyncio.to_thread(stack_down, settings) == ["tansu", "seaweedfs"]
        await asyncio.to_thread(stack_up, settings, 2)
        await _assert_group_resumes(bootstrap, topic, group, first)
    finally:
        await asyncio.to_thread(stack_down, settings)


def _assert_no_secret_in_pidfile_or_log(folder: Path) -> None:
    secret = (folder / "s3-credentials").read_text().split()[1]
    pidfile = TansuBroker.pidfile(folder / "tansu").read_text()
    assert "s3://tansu/" in pidfile
    assert secret not in pidfile
    assert secret not in (folder / "tansu" / "tansu.log").read_text()


def _assert_env_file_fits_tansu(path: Path) -> None:
    """The worker settings `stack up` writes override the two Kafka-first defaults Tansu needs
    otherwise: it has no InitProducerId, and it holds a fetch with an empty partition for the whole
    wait."""
    stack = Settings(_env_file=path)  # type: ignore[call-arg]
    assert not stack.kafka_enable_idempotence
    assert stack.kafka_fetch_max_wait_ms == 10
    defaults = Settings(_env_file=None)  # type: ignore[call-arg]
    assert defaults.kafka_enable_idempotence and defaults.kafka_fetch_max_wait_ms == 100
