"""A store that goes away for a while: the worker retries, commits nothing, then completes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.settings import Settings
from tests.integration.kafka_tools import (
    collect,
    committed_and_end,
    produce,
    request,
    results,
    running_worker,
    store_of_its_own,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_worker_waits_out_a_store_outage(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    s3, settings = store_of_its_own(
        make_settings, tmp_path / "s3", "outage", storage_retry_max_backoff_seconds=1.0
    )
    bootstrap = settings.kafka_bootstrap_servers
    await asyncio.to_thread(s3.start)
    try:
        async with running_worker(settings) as worker:
            await wait_until(lambda: worker.ready, 60, "partitions assigned")
            await asyncio.to_thread(s3.stop)  # the store goes away
            await produce(bootstrap, settings.request_topic, [request("during-outage", seed=9)])
            await wait_until(
                lambda: worker.metrics.storage_retries._value.get() >= 2, 60, "upload retries"
            )
            committed, _ = await committed_and_end(
                bootstrap, settings.group_id, settings.request_topic
            )
            assert sum(committed.values()) == 0  # nothing committed while the image is not stored
            assert not await collect(bootstrap, settings.result_topic, 1, timeout=1)

            await asyncio.to_thread(s3.start)  # back, same port and data
            records = await collect(bootstrap, settings.result_topic, 1, timeout=60)
        (result,) = results(records)["during-outage"]
        assert result.status == "completed"
        committed, end = await committed_and_end(
            bootstrap, settings.group_id, settings.request_topic
        )
        assert committed == end
    finally:
        await asyncio.to_thread(s3.stop)
