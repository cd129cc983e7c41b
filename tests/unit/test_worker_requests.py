"""How the worker treats requests (not records): duplicates, budgets, model switches. Real
Worker on the in-memory broker, fake engine, local store."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.engine.fake import FakeEngine
from tests.unit.harness import P0, TOPIC, Harness, event, running

pytestmark = pytest.mark.timeout(60)


async def test_requests_sharing_an_id_in_one_poll_are_generated_once_and_answered_alike(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine(), max_batch_size=4, max_batch_wait_ms=50)
    for _ in range(3):
        h.broker.append(TOPIC, 0, event("twice"))
    h.broker.append(TOPIC, 0, event("other"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 4, "all four committed")
    assert sorted(r for batch in h.engine.batches for r in batch) == ["other", "twice"]
    results = h.results()["twice"]
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert results[0].status == "completed"
