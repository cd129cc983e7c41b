"""The priority lane on the real parts: the embedded broker and S3 store, and the real diffusers
pipeline on tiny-sdxl (a second variant on the simulated engine). A worker busy on a backlog of
80 regular requests (256x256, 4 steps) is sent 3 priority requests: each completes before at
least 75 % of the regular ones (issue 19), every request has one result, and both topics are
committed to their ends.

The figure is read from the order of the results on a one-partition result topic (the order
they were published in), never from clocks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaProducer

from consumer.devtools.services import create_topics
from consumer.generation.engine import Engine, build_engine
from consumer.settings import Settings
from schemas import GenerationResult
from tests.integration.kafka_tools import (
    collect_until,
    committed_and_end,
    produce,
    request,
    results,
    running_worker,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

MakeSettings = Callable[..., Settings]
log = logging.getLogger(__name__)

REGULAR, PRIORITY = 80, 3
MAX_REGULAR_BEFORE = REGULAR // 4  # "before at least 75 % of the regular ones"


@dataclass
class Overtaking:
    sent_after: int  # regular results already published when the priority requests were sent
    taken_after: int  # ... when the worker was seen holding them (queued or running)
    before: dict[str, int]  # priority id -> regular results published before its own


def lane_settings(make_settings: MakeSettings, **overrides: object) -> Settings:
    """This test's own topics, control and progress included."""
    suffix = make_settings().group_id
    own = {"control_topic": f"control-{suffix}", "progress_topic": f"progress-{suffix}"}
    return make_settings(max_batch_wait_ms=50, **own, **overrides)


async def overtake(settings: Settings, engine: Engine | None = None) -> Overtaking:
    bootstrap = settings.kafka_bootstrap_servers
    await create_topics(bootstrap, [settings.request_topic, settings.progress_topic], 2)
    one_partition = [settings.priority_topic, settings.result_topic, settings.control_topic]
    await create_topics(bootstrap, one_partition, 1)
    backlog = [request(f"bulk-{i}", seed=i, steps=4) for i in range(REGULAR)]
    await produce(bootstrap, settings.request_topic, backlog)
    urgent = [f"urgent-{i}" for i in range(PRIORITY)]
    ids = {f"bulk-{i}" for i in range(REGULAR)} | set(urgent)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()  # before the worker: sending takes no connection time later
    try:
        async with running_worker(settings, engine) as worker:
            # Busy on the backlog (its first results out) before the priority requests are sent.
            await wait_until(lambda: worker.completed >= 1, 600, "the first regular result")
            sent_after = worker.completed
            for i, name in enumerate(urgent):
                value = request(name, seed=1000 + i, steps=4)
                await producer.send_and_wait(settings.priority_topic, value, name.encode())

            def held() -> bool:  # queued or running (or, all done, there is nothing to see)
                return worker._scheduler.holds(urgent[0]) or worker.completed >= REGULAR

            await wait_until(held, 300, "the priority requests taken")
            taken_after = worker.completed
            records = await collect_until(bootstrap, settings.result_topic, ids, timeout=900)
    finally:
        await producer.stop()
    by_id = results(records)
    assert sorted(by_id) == sorted(ids)
    assert all(len(rs) == 1 and rs[0].status == "completed" for rs in by_id.values())
    published = sorted(records, key=lambda r: r.offset)
    order = [GenerationResult.model_validate_json(r.value).request_id for r in published]
    regular_seen, before = 0, {}
    for request_id in order:
        if request_id.startswith("urgent-"):
            before[request_id] = regular_seen
        else:
            regular_seen += 1
    for topic in (settings.request_topic, settings.priority_topic):
        committed, end = await committed_and_end(bootstrap, settings.group_id, topic)
        assert committed == end, topic  # every partition committed, the priority one included
    return Overtaking(sent_after, taken_after, before)


def report(name: str, got: Overtaking) -> None:
    line = (
        f"{name}: {got.sent_after} regular results out when the priority requests were sent, "
        f"{got.taken_after} when the worker held them; "
        f"regular results before each priority one: {got.before} (of {REGULAR})"
    )
    print(line)  # shown with -s; the figure in the report
    log.warning(line)


async def test_priority_requests_overtake_a_backlog_on_the_diffusers_pipeline(
    make_settings: MakeSettings,
) -> None:
    settings = lane_settings(make_settings, generation_timeout_seconds=120)
    got = await overtake(settings)
    report("diffusers tiny-sdxl", got)
    assert all(n <= MAX_REGULAR_BEFORE for n in got.before.values()), got


async def test_priority_requests_overtake_a_backlog_on_the_simulated_engine(
    make_settings: MakeSettings,
) -> None:
    settings = lane_settings(make_settings, engine="simulated", simulated_step_ms=50)
    got = await overtake(settings, build_engine(settings.engine_config()))
    report("simulated", got)
    assert all(n <= MAX_REGULAR_BEFORE for n in got.before.values()), got
