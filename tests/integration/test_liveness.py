"""Liveness on the real broker and store: hostile events and rebalances while busy."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from consumer.devtools.services import create_topics
from consumer.generation.engine.fake import FakeEngine
from consumer.settings import Settings
from schemas import MAX_RESULT_BYTES
from tests.integration.kafka_tools import (
    collect,
    collect_until,
    committed_and_end,
    produce,
    request,
    results,
    running_worker,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MakeSettings = Callable[..., Settings]


async def test_an_event_with_40000_unknown_keys_gets_a_bounded_result_and_the_next_completes(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings()
    bootstrap = settings.kafka_bootstrap_servers
    hostile = {"request_id": "hostile", "prompt": "x", **{f"k{i:05d}": i for i in range(40_000)}}
    events = [json.dumps(hostile).encode(), request("after-hostile", seed=1)]
    assert len(events[0]) < settings.max_event_bytes  # parsed, not dead-lettered
    await produce(bootstrap, settings.request_topic, events, key=b"same-partition")
    async with running_worker(settings):
        records = await collect(bootstrap, settings.result_topic, 2)
    (rejected_record,) = [r for r in records if r.key == b"hostile"]
    assert len(rejected_record.value) <= MAX_RESULT_BYTES
    by_id = results(records)
    (rejected,) = by_id["hostile"]
    assert rejected.status == "rejected" and rejected.error is not None
    shown = len(rejected.error.violations)
    assert shown <= 20 and shown + rejected.error.omitted_violations == 40_000
    assert by_id["after-hostile"][0].status == "completed"
    committed, end = await committed_and_end(bootstrap, settings.group_id, settings.request_topic)
    assert committed == end


async def test_members_join_and_leave_while_a_worker_is_busy_and_every_request_completes(
    make_settings: MakeSettings,
) -> None:
    """Slots stay full for longer than the keep-alive interval while a second member joins and
    then leaves: partitions move both ways mid-batch and no request is lost."""
    settings = make_settings(
        max_batches_in_flight=1,
        max_batch_size=1,
        keepalive_poll_seconds=0.5,
        drain_timeout_seconds=5,
    )
    bootstrap = settings.kafka_bootstrap_servers
    await create_topics(bootstrap, [settings.request_topic], 4)
    ids = [f"busy-{i}" for i in range(16)]
    for index, request_id in enumerate(ids):  # keys spread them over the four partitions
        event = request(request_id, steps=3, seed=index)
        await produce(bootstrap, settings.request_topic, [event], key=f"k{index}".encode())
    slow = FakeEngine(step_seconds=0.5)  # 1.5 s per batch: three keep-alive intervals
    async with running_worker(settings, engine=slow) as first:
        await wait_until(lambda: first.completed >= 1, 60, "a first result")
        async with running_worker(settings, engine=FakeEngine(step_seconds=0.5)) as second:
            await wait_until(lambda: second.assignment(), 60, "the second member joins")
            await wait_until(lambda: second.completed >= 1, 60, "the second member works")
        # The second member left: its partitions come back to the first one.
        records = await collect_until(bootstrap, settings.result_topic, set(ids), timeout=120)
        assert first.metrics.partition_revocations._value.get() >= 1
    by_id = results(records)
    assert set(ids) <= set(by_id), f"lost: {sorted(set(ids) - set(by_id))}"
    assert all(r.status == "completed" for rs in by_id.values() for r in rs)
    committed, end = await committed_and_end(bootstrap, settings.group_id, settings.request_topic)
    assert committed == end
