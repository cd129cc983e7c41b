"""The worker end to end on a real broker, a real S3 store and the tiny diffusers model."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import boto3
import pytest
from botocore.config import Config
from PIL import Image

from consumer.devtools.services import create_topics
from consumer.generation.engine.fake import FakeEngine
from consumer.settings import Settings
from storage import read_png_parameters
from tests.integration.kafka_tools import (
    collect,
    committed_and_end,
    download,
    produce,
    request,
    results,
    running_worker,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

MakeSettings = Callable[..., Settings]


async def test_requests_become_completed_results_with_downloadable_pngs(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(kafka_enable_idempotence=True)  # Tansu refuses: plain fallback
    await create_topics(settings.kafka_bootstrap_servers, [settings.request_topic], 2)
    sizes = [(256, 256), (256, 128), (128, 256), (256, 256), (256, 256)]
    events = [request(f"ok-{i}", width=w, height=h, seed=i) for i, (w, h) in enumerate(sizes)]
    events.append(request("ok-many", num_images=2, seed=100))
    await produce(settings.kafka_bootstrap_servers, settings.request_topic, events)

    async with running_worker(settings):
        records = await collect(settings.kafka_bootstrap_servers, settings.result_topic, 6)

    by_id = results(records)
    assert sorted(by_id) == sorted([f"ok-{i}" for i in range(5)] + ["ok-many"])
    for index, (width, height) in enumerate(sizes):
        (result,) = by_id[f"ok-{index}"]
        assert result.status == "completed", result.error
        (image,) = result.images
        assert image.seed == index
        png = download(image.url)
        assert Image.open(io.BytesIO(png)).size == (width, height)
        assert read_png_parameters(png)["seed"] == index
        assert result.audit is not None and "noise" in (result.audit.note or "")
    (many,) = by_id["ok-many"]
    assert [im.seed for im in many.images] == [100, 101]
    assert len({im.key for im in many.images}) == 2
    committed, end = await committed_and_end(
        settings.kafka_bootstrap_servers, settings.group_id, settings.request_topic
    )
    assert committed == end  # everything published was committed, nothing more


async def test_invalid_events_get_rejected_results_or_dead_letters(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings()
    bootstrap = settings.kafka_bootstrap_servers
    undeliverable = [
        b"\xff\xfe not json",
        b"[1, 2, 3]",
        b'{"prompt": "no id"}',
        None,
        b'{"request_id": "bad id!", "prompt": "x"}',
        b"x" * (2 * 1024 * 1024),
    ]
    rejected = {
        "bad-size": request("bad-size", width=513),
        "bad-model": request("bad-model", model="someone/else"),
        "bad-field": json.dumps({"request_id": "bad-field", "prompt": "x", "sampler": 1}).encode(),
        "bad-cfg": b'{"request_id": "bad-cfg", "prompt": "x", "params": {"cfg": NaN}}',
        "bad-prompt": json.dumps({"request_id": "bad-prompt", "prompt": "   "}).encode(),
        "bad-steps": request("bad-steps", steps=10_000),
    }
    valid = [request(f"good-{i}", seed=i) for i in range(3)]
    mixed = [undeliverable[0], valid[0], *rejected.values(), *undeliverable[1:], *valid[1:]]
    await produce(bootstrap, settings.request_topic, mixed)

    async with running_worker(settings):
        records = await collect(bootstrap, settings.result_topic, len(rejected) + len(valid))
        dead = await collect(bootstrap, settings.dlq_topic, len(undeliverable))

    by_id = results(records)
    assert sorted(by_id) == sorted([*rejected, "good-0", "good-1", "good-2"])
    for request_id in rejected:
        (result,) = by_id[request_id]
        assert result.status == "rejected" and result.error is not None
        assert result.error.violations, result.error
    assert by_id["bad-model"][0].error.code == "model_not_allowed"  # type: ignore[union-attr]
    assert all(by_id[f"good-{i}"][0].status == "completed" for i in range(3))
    # The original bytes, untouched (partitions may interleave them); the 2 MB event does not fit
    # a stock broker's record limit: its first bytes, and a header that says so.
    huge = undeliverable[-1]
    (cut,) = [r for r in dead if dict(r.headers).get("dlq.truncated")]
    assert dict(cut.headers)["dlq.truncated"] == f"value:{len(huge)}".encode()
    assert dict(cut.headers)["dlq.error.code"] == b"event_too_large"
    assert huge.startswith(cut.value) and 0 < len(cut.value) < settings.kafka_max_request_size
    rest = [r.value or b"" for r in dead if r is not cut]
    assert sorted(rest) == sorted(v or b"" for v in undeliverable[:-1])
    for record in dead:
        headers = dict(record.headers)
        assert headers["dlq.source.topic"] == settings.request_topic.encode()
        assert int(headers["dlq.source.offset"]) >= 0
        assert headers["dlq.error.code"]
        assert headers["origin"] == b"test"  # original headers kept
        assert headers["ce_type"] == b"generation.dead_letter.v1"  # CloudEvents, binary mode


async def test_redelivered_request_overwrites_the_same_objects(make_settings: MakeSettings) -> None:
    settings = make_settings()
    same = request("dup-1", seed=5)
    await produce(settings.kafka_bootstrap_servers, settings.request_topic, [same, same])
    async with running_worker(settings):
        records = await collect(settings.kafka_bootstrap_servers, settings.result_topic, 2)
    first, second = results(records)["dup-1"]
    assert [i.key for i in first.images] == [i.key for i in second.images]
    assert [i.image_id for i in first.images] == [i.image_id for i in second.images]
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.aws_access_key_id.get_secret_value()
        if settings.aws_access_key_id
        else None,
        aws_secret_access_key=settings.aws_secret_access_key.get_secret_value()
        if settings.aws_secret_access_key
        else None,
        config=Config(s3={"addressing_style": "path"}),
    )
    listed = s3.list_objects_v2(
        Bucket=settings.s3_bucket, Prefix=f"{settings.s3_key_prefix}/dup-1/"
    )
    assert [o["Key"] for o in listed.get("Contents", [])] == [first.images[0].key]


async def test_unavailable_model_fails_that_request_only(make_settings: MakeSettings) -> None:
    settings = make_settings()
    events = [
        request("turbo", model="stabilityai/sdxl-turbo"),  # allowed, but not on this machine
        request("tiny", seed=1),
    ]
    await produce(settings.kafka_bootstrap_servers, settings.request_topic, events)
    async with running_worker(settings):
        records = await collect(settings.kafka_bootstrap_servers, settings.result_topic, 2)
    by_id = results(records)
    (turbo,) = by_id["turbo"]
    assert turbo.status == "failed" and turbo.error is not None
    assert turbo.error.code == "model_unavailable"
    assert by_id["tiny"][0].status == "completed"


async def test_timeout_gives_a_timeout_result_and_the_worker_goes_on(
    make_settings: MakeSettings,
) -> None:
    settings = make_settings(generation_timeout_seconds=0.001, max_steps=50)
    events = [request("slow", steps=50, width=512, height=512), request("quick", steps=1)]
    await produce(settings.kafka_bootstrap_servers, settings.request_topic, events)
    async with running_worker(settings) as worker:
        records = await collect(settings.kafka_bootstrap_servers, settings.result_topic, 2)
        assert worker.ready
    by_id = results(records)
    assert by_id["slow"][0].status == "timeout"
    assert by_id["slow"][0].error.code == "timeout"  # type: ignore[union-attr]
    # The 1-step request is not interruptible before its decode: it completes or times out,
    # and either way it has its result.
    assert by_id["quick"][0].status in ("completed", "timeout")


async def test_two_workers_in_one_group_share_the_partitions(make_settings: MakeSettings) -> None:
    settings = make_settings()
    bootstrap = settings.kafka_bootstrap_servers
    await create_topics(bootstrap, [settings.request_topic], 4)
    async with running_worker(settings) as first, running_worker(settings) as second:
        await wait_until(
            lambda: first.assignment() and second.assignment(), 60, "both workers assigned"
        )
        assert not set(first.assignment()) & set(second.assignment())
        events = [request(f"shared-{i}", seed=i) for i in range(12)]
        # Keys spread the requests over the partitions.
        for index, event in enumerate(events):
            await produce(bootstrap, settings.request_topic, [event], key=f"k{index}".encode())
        records = await collect(bootstrap, settings.result_topic, 12)
    assert sorted(results(records)) == sorted(f"shared-{i}" for i in range(12))
    assert first.completed > 0 and second.completed > 0


async def test_a_batch_longer_than_the_session_timeout_keeps_the_membership(
    make_settings: MakeSettings,
) -> None:
    """Heartbeats go on while the engine thread is busy: no rebalance, the commit goes through."""
    settings = make_settings(kafka_session_timeout_ms=6000, max_batches_in_flight=1)
    slow = FakeEngine(step_seconds=2.0)  # 4 steps: 8 s per batch, longer than the session
    events = [request(f"long-{i}", steps=4, seed=i) for i in range(3)]
    await produce(settings.kafka_bootstrap_servers, settings.request_topic, events)
    async with running_worker(settings, engine=slow) as worker:
        records = await collect(settings.kafka_bootstrap_servers, settings.result_topic, 3, 120)
        assert worker.metrics.partition_revocations._value.get() == 0
    assert sorted(results(records)) == ["long-0", "long-1", "long-2"]
    committed, end = await committed_and_end(
        settings.kafka_bootstrap_servers, settings.group_id, settings.request_topic
    )
    assert committed == end


async def test_a_seedless_request_sent_twice_is_answered_from_the_store(
    make_settings: MakeSettings,
) -> None:
    """The seed comes from the request_id. The second record is fresh (no worker ran it), so it
    is not looked up before it runs; its upload finds the first one's image under its key with
    the same parameters (create, If-None-Match): answered from the store, nothing rewritten."""
    settings = make_settings()
    bootstrap = settings.kafka_bootstrap_servers
    event = request("seedless-again")  # no seed
    async with running_worker(settings) as worker:
        await produce(bootstrap, settings.request_topic, [event])
        assert await collect(bootstrap, settings.result_topic, 1)
        await produce(bootstrap, settings.request_topic, [event])
        records = await collect(bootstrap, settings.result_topic, 2)
        assert worker.metrics.stored_answers._value.get() == 1
    first, second = results(records)["seedless-again"]
    assert second.audit is not None and "served from the store" in (second.audit.note or "")
    assert [i.seed for i in first.images] == [i.seed for i in second.images]
    assert [i.key for i in first.images] == [i.key for i in second.images]
    assert download(first.images[0].url) == download(second.images[0].url)
