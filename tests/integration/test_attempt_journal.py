"""The crash-loop guard's attempt journal on the real broker and store (issue 17): an owner that
still runs a request past its revoke limit is waited for, not taken for a crash."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from PIL import Image

from consumer.devtools.services import create_topics
from consumer.generation.engine import JobOutput, plan_job
from consumer.output.images import encode_output, store_output
from consumer.requests.journal_entries import Entry, Journal, State
from consumer.requests.journal_store import JOURNAL_FOLDER
from consumer.settings import Settings
from schemas import Accepted, parse_request
from storage import ImageStore, build_store
from tests.integration.kafka_tools import collect, produce, request, results, running_worker
from tests.unit.journals import crashes_if_all_died

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def stored_by_the_old_owner(settings: Settings, store: ImageStore, event: bytes) -> bytes:
    """What worker A stores for the request: its image, with the metadata the worker writes."""
    accepted = parse_request(event, settings.request_limits())
    assert isinstance(accepted, Accepted)
    job = plan_job(accepted.request, settings.default_negative_prompt, settings.pinned_revisions())
    output = JobOutput(job, [Image.new("RGB", (64, 64), (200, 30, 30))], 0.5)
    result = store_output(output, encode_output(output), store, settings.s3_key_prefix)
    data = store.get(result.images[0].key or "")
    assert data is not None
    return data


async def test_a_live_owner_past_its_revoke_limit_is_waited_for_not_taken_for_a_crash(
    make_settings: Callable[..., Settings],
) -> None:
    """Worker A lost the partition in a rebalance but still runs the request: its journal lists
    it as ENGINE and its lease keeps moving. Worker B, the new owner, neither runs it again (which
    would overwrite A's images behind A's published URL) nor counts a crash: it waits until A has
    stored the images and let go, then answers from the store."""
    settings = make_settings()
    bootstrap, topic = settings.kafka_bootstrap_servers, settings.request_topic
    await create_topics(bootstrap, [topic, settings.result_topic], 1)
    store = build_store(settings)
    event = request("held", width=64, height=64, seed=3)
    await produce(bootstrap, topic, [event])
    key = f"{settings.s3_key_prefix}/{JOURNAL_FOLDER}/worker-a.json"
    journal = Journal("worker-a", 0.0, {(topic, 0, 0): Entry("held", 0, State.ENGINE, time.time())})

    def renew() -> None:
        journal.lease_until = time.time() + 6
        store.put(key, journal.to_bytes(), "application/json")

    renew()
    async with running_worker(settings) as worker_b:
        for _ in range(5):  # A keeps running for five seconds, renewing its lease
            await asyncio.sleep(1)
            await asyncio.to_thread(renew)
        assert worker_b.completed == 0  # B waits
        image = await asyncio.to_thread(stored_by_the_old_owner, settings, store, event)
        journal.entries[(topic, 0, 0)] = Entry("held", 0, State.HELD, time.time())
        let_go = time.time()
        await asyncio.to_thread(renew)
        records = await collect(bootstrap, settings.result_topic, 1, timeout=60)
        assert worker_b.metrics.stored_answers._value.get() == 1
    (answer,) = results(records)["held"]
    assert answer.status == "completed" and records[0].timestamp / 1000 >= let_go - 1
    assert answer.audit is not None and "served from the store" in (answer.audit.note or "")
    assert store.get(answer.images[0].key or "") == image  # A's image, not written again
    assert crashes_if_all_died(store, 0, topic, settings.s3_key_prefix) == {}  # no crash
