"""A running worker rides out a kill -9 of its broker mid-backlog: nothing lost, no restart.

The broker keeps its data in S3 (durable_broker), so the restarted one still has the requests,
the results published so far and the group's committed offsets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from consumer.devtools.services import TansuBroker
from consumer.settings import Settings
from tests.integration.kafka_tools import (
    BACKLOG,
    assert_nothing_committed_without_a_result,
    backlog,
    collect,
    collect_until,
    produce,
    request,
    results,
    worker_and_task,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

BROKER_DOWN_SECONDS = 2.0


async def _kill_and_restart(broker: TansuBroker) -> None:
    # In threads: start() polls with blocking sleeps, and the worker's loop must keep running.
    await asyncio.to_thread(broker.kill)
    await asyncio.sleep(BROKER_DOWN_SECONDS)
    await asyncio.to_thread(broker.start)


async def test_worker_survives_broker_kill_9_mid_backlog(
    durable_broker: TansuBroker,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    bootstrap = durable_broker.bootstrap_servers
    settings = make_settings(kafka_bootstrap_servers=bootstrap, max_batch_size=2)
    placed = await backlog(settings)
    async with worker_and_task(settings) as (worker, task):
        assert await collect(bootstrap, settings.result_topic, 1, timeout=90), "no first result"
        done_at_kill = worker.completed
        await _kill_and_restart(durable_broker)
        assert done_at_kill < BACKLOG, "the backlog was finished before the kill"
        records = await collect_until(bootstrap, settings.result_topic, set(placed), timeout=150)
        by_id = results(records)
        assert set(placed) <= set(by_id), f"lost: {sorted(set(placed) - set(by_id))}"
        assert not task.done(), "the worker stopped"
        # The same worker goes on serving what arrives after the restart.
        late = request("after-restart", seed=99)
        await produce(bootstrap, settings.request_topic, [late], key=b"after-restart")
        after = await collect_until(bootstrap, settings.result_topic, {"after-restart"}, 90)
        assert "after-restart" in results(after), "no result for a request after the restart"
        assert not task.done(), "the worker stopped"
    assert all(r.status == "completed" for rs in by_id.values() for r in rs)
    await assert_nothing_committed_without_a_result(settings, placed)
