"""The worker's intake and acknowledgement code on an in-memory broker: rebalances mid-batch,
the join-while-busy race, publish failures that cannot heal, a broker that stays away, a batch
that raises and an engine that hangs. Real Worker, fake clients, fake engine, local store."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import (
    KafkaConnectionError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from consumer.generation.engine.fake import FakeEngine
from consumer.ops.sidecar import SidecarConfig, build_app
from consumer.worker import EXIT_UNHEALTHY
from tests.unit.harness import P0, P1, TOPIC, Harness, event, running

pytestmark = pytest.mark.timeout(60)


async def test_a_batch_finishing_across_a_rebalance_is_committed_not_redone(
    tmp_path: Path,
) -> None:
    """The partition is revoked while its batch runs longer than the revoke bound and comes
    straight back: the result is committed, and the re-fetched record is not generated again."""
    h = Harness(tmp_path, FakeEngine(step_seconds=0.5))
    h.broker.append(TOPIC, 0, event("long", steps=4))  # ~2 s, the revoke bound is 0.5 s
    async with running(h):
        await h.wait(lambda: h.batches, "the batch to start")
        await h.consumer.rebalance({P0})
        await h.wait(lambda: h.broker.committed.get(P0) == 1, "the commit")
        await asyncio.sleep(0.3)  # room for a wrong second generation
    assert h.batches == [["long"]]
    assert [r.status for r in h.results()["long"]] == ["completed"]
    assert min(h.gauge_samples) >= 0 and h.in_flight() == 0


async def test_records_of_a_partition_assigned_while_busy_are_all_completed(
    tmp_path: Path,
) -> None:
    """A member joins while every slot is busy: the new assignment starts unpaused, so a keep-alive
    poll returns its records. They are queued, not dropped, and every request completes."""
    h = Harness(tmp_path, FakeEngine(step_seconds=0.3))
    h.consumer.ignore_pause_of_new = True  # the race: the poll beats the listener's pause
    for i in range(3):
        h.broker.append(TOPIC, 0, event(f"a{i}", steps=2))
        h.broker.append(TOPIC, 1, event(f"b{i}", steps=2))
    async with running(h):
        await h.wait(lambda: h.batches, "a first batch")
        h.consumer.rebalance_during_next_poll({P0, P1})  # the keep-alive poll, slots full
        await h.wait(lambda: len(h.results()) == 6, "six results")
        await h.wait(lambda: h.broker.committed.get(P1) == 3, "p1 committed to its end")
    assert all(r.status == "completed" for rs in h.results().values() for r in rs)
    assert h.broker.committed.get(P0) == 3
    assert min(h.gauge_samples) >= 0 and h.in_flight() == 0


async def test_partitions_assigned_while_busy_are_paused(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeEngine(step_seconds=0.5))
    h.broker.append(TOPIC, 0, event("busy", steps=4))
    async with running(h):
        await h.wait(lambda: h.batches, "the batch to start")
        await h.consumer.rebalance({P0, P1})
        assert P1 in h.consumer.paused()
        await h.wait(lambda: h.broker.committed.get(P0) == 1, "the commit")


async def test_a_result_the_broker_refuses_for_good_becomes_a_minimal_result(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine())

    def refuse_first_result(topic: str, value: bytes | None) -> BaseException | None:
        if topic == "results" and b'"completed"' in (value or b""):
            error = MessageSizeTooLargeError()
            error.local = True  # type: ignore[attr-defined]
            return error
        return None

    h.producer.fail = refuse_first_result
    h.broker.append(TOPIC, 0, event("refused"))
    h.broker.append(TOPIC, 0, event("next"))
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 2, "both committed")
    by_id = h.results()
    (minimal,) = by_id["refused"]
    assert minimal.status == "failed" and minimal.error is not None
    assert minimal.error.code == "result_refused"
    assert h.worker.metrics.publish_refused.labels("results")._value.get() == 2
    assert h.worker.unhealthy is None


async def test_a_broker_that_refuses_every_topic_makes_the_worker_unhealthy(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine(), unhealthy_exit_grace_seconds=0.5)
    h.producer.fail = lambda topic, value: TopicAuthorizationFailedError()
    h.broker.append(TOPIC, 0, event("nowhere"))
    async with running(h) as task:
        await asyncio.wait_for(task, 10)
    assert h.worker.unhealthy and "refuses every record" in h.worker.unhealthy
    assert h.worker.exit_code == EXIT_UNHEALTHY
    assert P0 not in h.broker.committed  # nothing committed without an outcome


async def test_stop_during_a_broker_outage_exits_within_the_drain_bound(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeEngine(), drain_timeout_seconds=1)
    h.producer.fail = lambda topic, value: KafkaConnectionError()
    h.broker.append(TOPIC, 0, b"not json")  # a dead letter on the intake path
    h.broker.append(TOPIC, 0, event("stuck"))
    async with running(h) as task:
        await h.wait(lambda: h.producer.attempts >= 2, "publish retries")
        started = time.monotonic()
        h.worker.request_stop()
        await asyncio.wait_for(task, 15)
    assert time.monotonic() - started < 1 + 8  # drain bound + abandon wait + close bounds
    assert P0 not in h.broker.committed


async def test_a_batch_raising_unexpectedly_yields_internal_error_results(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeEngine(), max_batch_size=4, max_batch_wait_ms=50)

    def out_of_memory(*args: Any) -> str:
        raise MemoryError("while encoding")

    h.worker._store.put = out_of_memory  # type: ignore[method-assign]
    for name in ("m1", "m2"):
        h.broker.append(TOPIC, 0, event(name))
    h.broker.append(TOPIC, 0, event("m3", extra_field=1))  # rejected: unaffected
    async with running(h):
        await h.wait(lambda: h.broker.committed.get(P0) == 3, "all committed")
    by_id = h.results()
    for name in ("m1", "m2"):
        (result,) = by_id[name]
        assert result.status == "failed" and result.error is not None
        assert result.error.code == "internal_error"
        assert "MemoryError" not in result.model_dump_json()  # no internal text
    assert by_id["m3"][0].status == "rejected"
    assert h.worker.metrics.internal_errors._value.get() == 1


async def test_a_hung_engine_makes_health_503_and_the_worker_exit_unhealthy(
    tmp_path: Path,
) -> None:
    hang = threading.Event()
    h = Harness(
        tmp_path,
        FakeEngine(hang=hang),
        generation_timeout_seconds=0.2,
        engine_grace_seconds=0.5,
        unhealthy_exit_grace_seconds=0.5,
    )
    h.broker.append(TOPIC, 0, event("hangs"))
    client = TestClient(TestServer(build_app(SidecarConfig.from_settings(h.settings), h.worker)))
    await client.start_server()
    try:
        async with running(h) as task:
            await h.wait(lambda: h.worker.unhealthy is not None, "the watchdog", timeout=10)
            response = await client.get("/health")
            body = await response.json()
            assert response.status == 503 and body["status"] == "unhealthy"
            assert "generating" in body["reason"]
            assert (await client.get("/ready")).status == 503
            await asyncio.wait_for(task, 15)
    finally:
        hang.set()
        await client.close()
    assert h.worker.exit_code == EXIT_UNHEALTHY
    assert P0 not in h.broker.committed  # the stuck request is delivered again
    assert not h.results()


async def test_readiness_follows_the_image_store(tmp_path: Path) -> None:
    h = Harness(tmp_path, FakeEngine())
    async with running(h):
        await h.wait(lambda: h.worker.ready, "ready")
        (tmp_path / "images").rename(tmp_path / "gone")
        (tmp_path / "images").write_text("not a folder")
        await h.wait(lambda: not h.worker.ready, "not ready")
        assert h.worker.not_ready_reason() == "image store unreachable"


@pytest.mark.parametrize("join_after_warmup", [True, False])
async def test_the_default_model_loads_while_joining_or_before(
    tmp_path: Path, join_after_warmup: bool
) -> None:
    h = Harness(tmp_path, FakeEngine(load_seconds=1.0), join_after_warmup=join_after_warmup)
    started = time.monotonic()
    async with running(h):
        await h.wait(lambda: h.worker.assignment() != [], "the group join")
        assert h.worker.not_ready_reason() in ("loading the default model", None)
        await h.wait(lambda: h.worker.ready, "ready once the model is loaded")
        loaded = time.monotonic()
    joined = (h.consumer.started_at or 0) - started
    assert h.engine.load_calls == ["fake"]  # loaded once, before any request
    if join_after_warmup:
        assert joined >= 1.0  # after the load
    else:
        assert joined < 0.5 and loaded - started >= 1.0  # side by side


async def test_a_load_before_the_join_longer_than_the_poll_age_is_no_intake_stall(
    tmp_path: Path,
) -> None:
    """JOIN_AFTER_WARMUP: the intake loop starts only once the model is loaded, which may take
    minutes (a first download). The intake rule waits for the loop to run; the load is watched
    as a load. (The worker used to turn unhealthy MAX_POLL_AGE_SECONDS into the load.)"""
    h = Harness(
        tmp_path, FakeEngine(load_seconds=2.5), join_after_warmup=True, max_poll_age_seconds=1.0
    )
    async with running(h):
        await h.wait(lambda: h.worker.ready or h.worker.unhealthy is not None, "ready")
        assert h.worker.unhealthy is None and h.worker.ready


async def test_an_intake_loop_that_stops_stepping_makes_the_worker_unhealthy(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, FakeEngine(), max_poll_age_seconds=1.0)
    stuck = asyncio.Event()
    real_getmany = h.consumer.getmany

    async def getmany(timeout_ms: int = 0, max_records: int | None = None) -> Any:
        if stuck.is_set():  # one poll that takes 3 s: past the limit, the loop takes no step
            stuck.clear()
            await asyncio.sleep(3.0)
        return await real_getmany(timeout_ms, max_records)

    h.consumer.getmany = getmany  # type: ignore[method-assign]
    async with running(h):
        await h.wait(lambda: h.worker.ready, "ready")
        stuck.set()
        await h.wait(lambda: h.worker.unhealthy is not None, "the watchdog", timeout=10)
    assert h.worker.unhealthy is not None and "intake loop stalled" in h.worker.unhealthy


async def test_readiness_turns_ready_once_the_default_model_loads_on_a_later_try(
    tmp_path: Path,
) -> None:
    """A first load of the default model that fails leaves the worker not ready only until a
    later try (every MODEL_RETRY_SECONDS) loads it; the worker stays healthy meanwhile."""
    broken = {"fake"}
    engine = FakeEngine(unavailable=broken, model_retry_seconds=1.0)
    h = Harness(tmp_path, engine, model_retry_seconds=1.0)
    async with running(h):
        await h.wait(
            lambda: (h.worker.not_ready_reason() or "").startswith(
                "the default model failed to load: model 'fake' is not available"
            ),
            "the failed load as the reason",
        )
        await h.wait(lambda: len(engine.load_calls) >= 2, "a second try")
        assert not h.worker.ready and h.worker.unhealthy is None
        broken.clear()
        await h.wait(lambda: h.worker.ready, "ready once a try loads the model")
        assert h.worker.health.model_problem is None


async def test_readiness_turns_ready_once_a_request_loads_the_default_model(
    tmp_path: Path,
) -> None:
    """A worker that joined before its warm-up: a request that loads the default model makes it
    ready at once, without waiting for the next try."""
    broken = {"fake"}
    engine = FakeEngine(unavailable=broken, model_retry_seconds=0.5)
    h = Harness(tmp_path, engine, model_retry_seconds=600)
    async with running(h):
        await h.wait(lambda: h.worker.health.model_problem is not None, "the failed load")
        assert h.worker.not_ready_reason() == h.worker.health.model_problem
        await asyncio.sleep(0.6)  # past the engine's own memory of the failure
        broken.clear()
        h.broker.append(TOPIC, 0, event("loads-it"))
        await h.wait(lambda: "loads-it" in h.results(), "the request")
        await h.wait(lambda: h.worker.ready, "ready", timeout=5)
    assert [r.status for r in h.results()["loads-it"]] == ["completed"]


async def test_a_worker_joining_after_warmup_does_not_join_while_its_model_cannot_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """JOIN_AFTER_WARMUP: no join (no partitions, no share of the requests answered
    model_unavailable) while the default model cannot be loaded; /ready and the log say why,
    /health says it is alive; it keeps trying and joins once the model loads."""
    broken = {"fake"}
    engine = FakeEngine(unavailable=broken, model_retry_seconds=0.5)
    h = Harness(tmp_path, engine, join_after_warmup=True, model_retry_seconds=0.5)
    h.broker.append(TOPIC, 0, event("waits"))
    client = TestClient(TestServer(build_app(SidecarConfig.from_settings(h.settings), h.worker)))
    await client.start_server()
    try:
        async with running(h):
            await h.wait(lambda: len(engine.load_calls) >= 3, "three tries")
            assert h.consumer.started_at is None  # not joined
            ready = await client.get("/ready")
            reason = (await ready.json())["reason"]
            assert ready.status == 503
            assert reason.startswith("the default model failed to load: model 'fake'")
            health = await client.get("/health")
            assert health.status == 200 and (await health.json())["status"] == "starting"
            logged = [r.getMessage() for r in caplog.records if r.name == "consumer.ops.health"]
            assert any("joins its group only once it loads" in line for line in logged)
            broken.clear()
            await h.wait(lambda: h.consumer.started_at is not None, "the join")
            await h.wait(lambda: "waits" in h.results(), "the request")
            await h.wait(lambda: h.worker.ready, "ready")
    finally:
        await client.close()
    assert [r.status for r in h.results()["waits"]] == ["completed"]
    assert h.worker.unhealthy is None


async def test_steps_slower_than_the_grace_give_timeout_not_an_unhealthy_exit(
    tmp_path: Path,
) -> None:
    """Steps of 2 s, GENERATION_TIMEOUT_SECONDS=2.2, ENGINE_GRACE_SECONDS=0.3: the second step
    ends at ~4 s, past the timeout, and the request is answered `timeout`. The watchdog's 2.5 s
    count from the last step: a call that keeps stepping is never hung (counted from the call's
    start they made the worker exit 70 before the step boundary came)."""
    h = Harness(
        tmp_path,
        FakeEngine(step_seconds=2.0),
        generation_timeout_seconds=2.2,
        engine_grace_seconds=0.3,
    )
    h.broker.append(TOPIC, 0, event("slow", steps=4))
    async with running(h):
        await h.wait(lambda: "slow" in h.results(), "the result")
    (result,) = h.results()["slow"]
    assert result.status == "timeout"
    assert h.worker.unhealthy is None and h.worker.exit_code == 0


async def test_compilations_longer_than_the_generation_limit_are_loads(tmp_path: Path) -> None:
    """TORCH_COMPILE: the warm-up's compilation, and a new shape's, take longer than
    GENERATION_TIMEOUT_SECONDS + ENGINE_GRACE_SECONDS: they are judged as loads (within
    MODEL_LOAD_TIMEOUT_SECONDS), and the timeout counts from the end of their first step."""
    engine = FakeEngine(compile_seconds=2.5, step_seconds=0.05)
    h = Harness(
        tmp_path,
        engine,
        join_after_warmup=True,
        generation_timeout_seconds=0.5,
        engine_grace_seconds=0.5,
        model_load_timeout_seconds=30,
    )
    h.broker.append(TOPIC, 0, event("new-shape", steps=2, params={"width": 128, "height": 128}))
    h.broker.append(TOPIC, 0, event("same-shape", steps=2, params={"width": 128, "height": 128}))
    async with running(h):
        await h.wait(lambda: len(h.results()) == 2, "both results")
    assert [rs[0].status for rs in h.results().values()] == ["completed", "completed"]
    assert h.worker.unhealthy is None


async def test_a_compilation_past_the_load_limit_is_a_hang(tmp_path: Path) -> None:
    h = Harness(
        tmp_path,
        FakeEngine(compile_seconds=3.0),
        join_after_warmup=True,
        model_load_timeout_seconds=1.0,
        unhealthy_exit_grace_seconds=0.1,
    )
    async with running(h) as task:
        await h.wait(lambda: h.worker.unhealthy is not None, "the watchdog", timeout=10)
        await asyncio.wait_for(task, 15)
    assert (h.worker.unhealthy or "").startswith("engine compiling 'fake'")
    assert h.worker.exit_code == EXIT_UNHEALTHY
