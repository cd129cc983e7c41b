"""One request, one outcome, at the seams between parts (issue 16), on a real worker, broker and
store and the tiny diffusers model: an answered request stays answered, a request_id reused with
other parameters is refused, a stop mid-batch costs its companions nothing, a late result says so,
and the `finished` progress event goes out before the result."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumer.client import GenerationClient
from consumer.devtools.services import create_topics
from consumer.settings import Settings
from schemas import GenerationResult
from storage import build_store
from tests.integration.kafka_tools import (
    collect,
    collect_until,
    download,
    produce,
    results,
    running_worker,
    store_of_its_own,
    wait_until,
)
from tests.unit.journals import crashes_if_all_died, seed_crashes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def body(request_id: str, **params: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "prompt": "a lighthouse",
        "params": {"width": 64, "height": 64, **params},
    }


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


async def all_results(settings: Settings, request_id: str, count: int) -> list[GenerationResult]:
    """Every result published for `request_id`, once `count` of them are in (60 s at most)."""
    deadline = time.monotonic() + 60
    found: list[GenerationResult] = []
    while len(found) < count and time.monotonic() < deadline:
        records = await collect(
            settings.kafka_bootstrap_servers, settings.result_topic, 10_000, timeout=1
        )
        found = results(records).get(request_id, [])
    return found


@pytest.mark.parametrize("then", ["cancelled", "past its deadline", "past MAX_REQUEST_AGE"])
async def test_an_answered_request_stays_answered_when_read_again(
    contract_settings: Settings, then: str
) -> None:
    """Worker A completes R, and its commit does not land (here: worker B reads the topic as a
    new group, as after a lost commit); then R is cancelled, or its deadline or age passes.
    Worker B answers R from the store, `completed` again, not `cancelled` or `expired`."""
    settings = contract_settings
    request = body("answered", seed=1)
    if then == "past its deadline":
        request["deadline"] = in_seconds(8)
    async with GenerationClient(settings) as client:
        async with running_worker(settings) as worker:
            await wait_until(lambda: worker.ready, 60, "worker A ready")
            await client.submit(request)
            first = await client.wait("answered", timeout=60)
        assert first is not None and first.status == "completed", first
        later = {}
        if then == "cancelled":
            await client.cancel("answered")
        elif then == "past its deadline":
            await asyncio.sleep(
                max(0.0, datetime.fromisoformat(request["deadline"]).timestamp() - time.time())
                + 0.5
            )
        else:
            later = {"max_request_age_seconds": 1.0}
            await asyncio.sleep(1.5)
    worker_b = settings.model_copy(update={"group_id": settings.group_id + "-b", **later})
    async with running_worker(worker_b):
        answers = await all_results(settings, "answered", 2)
    assert [a.status for a in answers] == ["completed", "completed"], answers
    assert [im.key for im in answers[1].images] == [im.key for im in first.images]
    assert answers[1].audit is not None and "served from the store" in (answers[1].audit.note or "")


async def test_a_stopped_request_forgets_the_crash_on_record_of_an_earlier_worker(
    contract_settings: Settings,
) -> None:
    """A dead worker's journal says it crashed running the record; the record is then past its
    deadline: answered `expired`, and once committed no crash of it is on record any more."""
    settings = contract_settings
    store = build_store(settings)
    topic, prefix = settings.request_topic, settings.s3_key_prefix
    for partition in (0, 1):  # wherever its key puts it
        owner = f"dead-{partition}"
        seed_crashes(store, 0, "crashed", 1, topic, owner, prefix, partition)
    async with GenerationClient(settings) as client, running_worker(settings):
        await client.submit({**body("crashed"), "deadline": in_seconds(-5)})
        result = await client.wait("crashed", timeout=60)
    assert result is not None and result.status == "expired"
    on_record = [crashes_if_all_died(store, 0, topic, prefix, p) for p in (0, 1)]
    assert sorted(on_record, key=len) == [{}, {0: 1}]  # the other partition's is not its own
    committed = [crashes_if_all_died(store, 1, topic, prefix, p) for p in (0, 1)]
    assert committed == [{}, {}]


async def test_a_request_id_reused_with_other_parameters_is_refused_and_the_images_kept(
    contract_settings: Settings,
) -> None:
    settings = contract_settings
    async with GenerationClient(settings) as client, running_worker(settings):
        await client.submit(body("reused", seed=1))
        first = await client.wait("reused", timeout=60)
        assert first is not None and first.status == "completed", first
        before = download(first.images[0].url)
        for changed in ({"seed": 2}, {"num_images": 2, "seed": 1}, {"steps": 2}):
            await client.submit(body("reused", **changed))
            refused = await client.wait("reused", timeout=60)
            assert refused is not None and refused.status == "rejected", (changed, refused)
            assert refused.error is not None and refused.error.code == "request_id_conflict"
            assert refused.images == []
        folder = f"{settings.s3_key_prefix}/reused"
        store = build_store(settings)
        assert await asyncio.to_thread(store.keys_in, folder, 10) == [f"{folder}/0.png"]
        await client.submit(body("reused", seed=1))  # the same parameters: the same answer
        again = await client.wait("reused", timeout=60)
        assert again is not None and again.status == "completed"
        assert [im.key for im in again.images] == [im.key for im in first.images]
        # Another format has keys of its own (0.webp): a fresh record is not looked up, so it is
        # answered under those, beside the first request's image, which stays as it was (the gap
        # of skipping lookups for records no worker ran: docs/guarantees.md).
        await client.submit(body("reused", format="webp"))
        other_format = await client.wait("reused", timeout=60)
        assert other_format is not None and other_format.status == "completed"
        assert other_format.images[0].key.endswith("/0.webp")
    assert download(first.images[0].url) == before  # the published URL shows what it showed


async def test_a_cancel_during_a_batch_stops_only_that_request(contract_settings: Settings) -> None:
    """Two requests in one engine call; one is cancelled mid-run. It is answered at the next
    step, and its companion goes on from where it was instead of starting again at step 1."""
    settings = contract_settings
    slow = {"steps": 30, "width": 256, "height": 256}
    events = [
        json.dumps(body(name, seed=seed, **slow)).encode()
        for name, seed in (("doomed", 1), ("companion", 2))
    ]
    # One key, one partition: both come in one poll and share one batch.
    await produce(settings.kafka_bootstrap_servers, settings.request_topic, events, key=b"pair")
    async with GenerationClient(settings) as client:
        client.watch("doomed")
        client.watch("companion")
        async with running_worker(settings):
            async for event in client.progress("doomed"):
                if event.stage == "step" and (event.step or 0) >= 2:
                    break
            await client.cancel("doomed")
            cancelled = await client.wait("doomed", timeout=60)
            done = await client.wait("companion", timeout=120)
    assert cancelled is not None and cancelled.status == "cancelled", cancelled
    assert done is not None and done.status == "completed", done
    progress = await collect(
        settings.kafka_bootstrap_servers, settings.progress_topic, 10_000, timeout=2
    )
    companion = [json.loads(r.value) for r in progress if r.key == b"companion"]
    stages = [event["stage"] for event in companion]
    steps = [event["step"] for event in companion if event["stage"] == "step"]
    assert stages.count("started") == 1, stages
    assert steps == sorted(steps) and steps[-1] == slow["steps"], steps  # never back to 1
    doomed = [json.loads(r.value) for r in progress if r.key == b"doomed"]
    assert doomed[-1]["stage"] == "finished", doomed  # its progress ended with its answer


async def test_a_result_stored_after_its_deadline_is_published_as_late(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The deadline passes while the store is away: the images, generated in time, are stored
    once it is back, and the `completed` result says `late`."""
    s3, settings = store_of_its_own(
        make_settings, tmp_path / "s3", "late", storage_retry_max_backoff_seconds=0.5
    )
    bootstrap = settings.kafka_bootstrap_servers
    await create_topics(bootstrap, [settings.request_topic], 1)
    await asyncio.to_thread(s3.start)
    try:
        async with running_worker(settings) as worker:
            await wait_until(lambda: worker.ready, 60, "partitions assigned")
            await asyncio.to_thread(s3.stop)
            deadline = time.time() + 3
            late = {
                **body("late-one", seed=3),
                "deadline": datetime.fromtimestamp(deadline, UTC).isoformat(),
            }
            on_time = body("on-time", seed=4)
            await produce(bootstrap, settings.request_topic, [json.dumps(late).encode()])
            await wait_until(lambda: time.time() > deadline + 0.5, 30, "the deadline to pass")
            assert worker.metrics.storage_retries._value.get() >= 1
            await asyncio.to_thread(s3.start)
            await produce(bootstrap, settings.request_topic, [json.dumps(on_time).encode()])
            records = await collect_until(
                bootstrap, settings.result_topic, {"late-one", "on-time"}, 60
            )
        by_id = results(records)
        (result,) = by_id["late-one"]
        assert result.status == "completed" and result.late is True, result
        assert by_id["on-time"][0].late is False
    finally:
        await asyncio.to_thread(s3.stop)


async def test_the_finished_progress_event_goes_out_before_the_result(
    contract_settings: Settings,
) -> None:
    settings = contract_settings
    async with GenerationClient(settings) as client, running_worker(settings):
        await client.submit(body("ordered", seed=5, steps=2))
        result = await client.wait("ordered", timeout=60)
    assert result is not None and result.status == "completed"
    bootstrap = settings.kafka_bootstrap_servers
    (answer,) = await collect(bootstrap, settings.result_topic, 1)
    progress = await collect(bootstrap, settings.progress_topic, 10_000, timeout=2)
    (finished,) = [r for r in progress if json.loads(r.value)["stage"] == "finished"]
    assert finished.timestamp <= answer.timestamp
