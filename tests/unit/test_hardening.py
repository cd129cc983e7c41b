"""Issue 17 on the real Worker with the in-memory broker, a fake engine and a local store: every
wait on the broker ends, and the evidence of attempts_exhausted stays until its commit lands."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import CommitFailedError

from consumer.generation.engine.fake import FakeEngine
from tests.unit.harness import TOPIC, Harness, event, running
from tests.unit.journals import crashes_if_all_died, seed_crashes

pytestmark = pytest.mark.timeout(60)


async def test_a_commit_that_never_returns_does_not_keep_a_stopping_worker(
    tmp_path: Path,
) -> None:
    """aiokafka retries a commit for as long as the coordinator is away: the intake loop waited
    inside it, so SIGTERM neither drained nor exited."""
    h = Harness(tmp_path, FakeEngine())
    entered = asyncio.Event()

    async def coordinator_away(offsets: Any) -> None:
        entered.set()
        await asyncio.Event().wait()  # never answers

    h.consumer.commit = coordinator_away  # type: ignore[method-assign]
    h.broker.append(TOPIC, 0, b"not json")  # answered at once (a dead letter), then committed
    task = asyncio.create_task(h.worker.run())
    await asyncio.wait_for(entered.wait(), 10)
    stopped_at = time.monotonic()
    h.worker.request_stop()
    await asyncio.wait_for(task, 8)
    assert time.monotonic() - stopped_at < 5


async def test_the_evidence_of_attempts_exhausted_stays_until_its_commit_lands(
    tmp_path: Path,
) -> None:
    """A refused commit means the next owner reads the poison request again: it must find the
    crashes on record and answer it again without running it."""
    h = Harness(tmp_path, FakeEngine())
    seed_crashes(h.store, 0, "poison", 3)

    async def refused(offsets: Any) -> None:
        raise CommitFailedError("another member owns the partition now")

    h.consumer.commit = refused  # type: ignore[method-assign]
    h.broker.append(TOPIC, 0, event("poison"))
    async with running(h):
        await h.wait(lambda: "poison" in h.results(), "the poison request answered")
        await asyncio.sleep(0.3)  # the journals are written after the publish
    (answer,) = h.results()["poison"]
    assert answer.error is not None and answer.error.code == "attempts_exhausted"
    assert crashes_if_all_died(h.store) == {0: 3}


async def test_a_request_whose_producer_clock_is_behind_is_not_expired_by_age(
    tmp_path: Path,
) -> None:
    """MAX_REQUEST_AGE_SECONDS counted from a producer's CreateTime 20 s behind: with the skew
    allowance (CLOCK_SKEW_SECONDS, 30 s) the request runs; with none it would be expired."""
    h = Harness(tmp_path, FakeEngine(), max_request_age_seconds=10, clock_skew_seconds=30)
    h.broker.append(TOPIC, 0, event("behind"), timestamp=int((time.time() - 20) * 1000))
    async with running(h):
        await h.wait(lambda: "behind" in h.results(), "an answer")
    assert h.results()["behind"][0].status == "completed"


async def test_work_abandoned_at_shutdown_counts_no_crash(tmp_path: Path) -> None:
    """A drain past DRAIN_TIMEOUT_SECONDS abandons the batch at its next step: that is no
    crash, and three rolling restarts must not make an innocent request attempts_exhausted."""
    h = Harness(tmp_path, FakeEngine(step_seconds=0.1), drain_timeout_seconds=0.2)
    seed_crashes(h.store, 0, "long", 1)  # an earlier crash: its evidence stays
    h.broker.append(TOPIC, 0, event("long", steps=50))
    task = asyncio.create_task(h.worker.run())
    await h.wait(lambda: h.engine.batches != [] and h.batches != [], "the engine call")
    await asyncio.sleep(0.2)
    h.worker.request_stop()
    await asyncio.wait_for(task, 20)
    assert "long" not in h.results()
    assert crashes_if_all_died(h.store) == {0: 1}
