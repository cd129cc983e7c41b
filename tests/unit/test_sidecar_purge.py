"""Purge safety: no open purge beyond loopback, at most one purge per interval (not raced by
bodies held back), failed keys limited per peer, logged and counted, malformed keys refused."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition

from consumer.generation.engine import Engine
from consumer.generation.engine.fake import FakeEngine
from consumer.ops.metrics import WorkerMetrics
from consumer.ops.purge_guard import is_loopback
from consumer.ops.sidecar import SidecarConfig, build_app
from consumer.settings import Settings

KEY = "purge-key-0123456789"


class IdleWorker:
    """The slice of a worker the sidecar reads (its WorkerStatus protocol)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine: Engine = engine or FakeEngine()
        self.metrics = WorkerMetrics()
        self.draining = False
        self.unhealthy: str | None = None
        self.completed = 0
        self.broker_connected = True

    def not_ready_reason(self) -> str | None:
        return None

    def assignment(self) -> list[TopicPartition]:
        return []


async def client_for(worker: IdleWorker | None = None, **overrides: Any) -> TestClient[Any, Any]:
    settings = Settings(_env_file=None, default_model="fake", **overrides)
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_app(SidecarConfig.from_settings(settings), worker or IdleWorker()))
    )
    await client.start_server()
    return client


async def raw_request(client: TestClient[Any, Any], head: bytes, body: bytes = b"") -> int:
    """One request written on a socket of its own (bytes no HTTP client library would send);
    the response's status."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head + body)
        await writer.drain()
        status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


@pytest.fixture
async def open_sidecar() -> AsyncIterator[TestClient[Any, Any]]:
    client = await client_for(app_host="0.0.0.0")
    yield client
    await client.close()


async def test_purge_without_a_key_beyond_loopback_is_forbidden(
    open_sidecar: TestClient[Any, Any],
) -> None:
    response = await open_sidecar.post("/v1/models/purge")
    assert response.status == 403
    assert "REQUIRE_API_KEY" in (await response.json())["error"]["message"]
    assert (await open_sidecar.get("/health")).status == 200  # the rest still serves


async def test_purge_on_loopback_without_a_key_works_once_per_interval() -> None:
    client = await client_for(app_host="127.0.0.1", purge_min_interval_seconds=60)
    try:
        assert (await client.post("/v1/models/purge")).status == 200
        again = await client.post("/v1/models/purge")
        assert again.status == 429 and 0 < int(again.headers["Retry-After"]) <= 60
    finally:
        await client.close()


async def test_a_key_opens_purge_on_any_interface() -> None:
    client = await client_for(app_host="0.0.0.0", require_api_key=True, api_key=KEY)
    try:
        assert (await client.post("/v1/models/purge")).status == 401
        assert (await client.post("/v1/models/purge", headers={"X-API-Key": KEY})).status == 200
    finally:
        await client.close()


def test_loopback_hosts() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.5")
    assert not is_loopback("worker.internal")


async def test_failed_keys_are_limited_per_peer_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = IdleWorker()
    client = await client_for(worker, app_host="0.0.0.0", require_api_key=True, api_key=KEY)
    wrong = "guess-0000000000000000"
    try:
        with caplog.at_level(logging.WARNING, logger="consumer.ops.sidecar"):
            for _ in range(5):
                response = await client.post("/v1/models/purge", headers={"X-API-Key": wrong})
                assert response.status == 401
            # The sixth try is refused before its key is looked at: the right key too.
            limited = await client.post("/v1/models/purge", headers={"X-API-Key": KEY})
        assert limited.status == 429
        assert 0 < int(limited.headers["Retry-After"]) <= 60
        assert (await limited.json())["error"]["code"] == "too_many_requests"
        failures = worker.metrics.registry.get_sample_value("purge_auth_failures_total")
        assert failures == 5
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) >= 5
        assert all(getattr(r, "peer", None) == "127.0.0.1" for r in warnings)
        logged = " ".join(r.getMessage() + repr(r.__dict__) for r in caplog.records)
        assert wrong not in logged and KEY not in logged
        assert (await client.get("/health")).status == 200  # the rest still serves
    finally:
        await client.close()


def test_the_failure_limit_is_per_peer_and_forgets_after_its_window() -> None:
    from consumer.ops.purge_guard import FailureLimiter

    now = [1000.0]
    limiter = FailureLimiter(limit=5, window_seconds=60, clock=lambda: now[0])
    for _ in range(5):
        assert limiter.retry_after("10.0.0.1") is None
        limiter.record("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 60
    assert limiter.retry_after("10.0.0.2") is None  # another peer is not held back
    now[0] += 30
    assert limiter.retry_after("10.0.0.1") == 30
    now[0] += 30
    assert limiter.retry_after("10.0.0.1") is None  # the window has passed


def test_the_failure_limiter_remembers_a_bounded_number_of_peers() -> None:
    from consumer.ops.purge_guard import FailureLimiter

    limiter = FailureLimiter(limit=1, window_seconds=60, max_peers=3, clock=lambda: 0.0)
    for peer in ("a", "b", "c", "d"):
        limiter.record(peer)
    assert len(limiter) == 3
    assert limiter.retry_after("a") is None and limiter.retry_after("d") is not None


async def test_a_key_with_bytes_that_are_not_utf8_is_refused_not_an_error() -> None:
    client = await client_for(app_host="0.0.0.0", require_api_key=True, api_key=KEY)
    head = (
        b"POST /v1/models/purge HTTP/1.1\r\nHost: sidecar\r\nX-API-Key: \xff\xfe"
        + KEY.encode()
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    try:
        assert await raw_request(client, head) == 401
        unicode = {"X-API-Key": "schl\u00fcssel-\u00fcber-16-zeichen"}
        assert (await client.post("/v1/models/purge", headers=unicode)).status == 401
    finally:
        await client.close()


async def test_purges_that_hold_back_their_bodies_cannot_both_pass_the_interval() -> None:
    """Both requests are in before either body: the interval check and its update are one step,
    so only one of them purges."""
    client = await client_for(app_host="127.0.0.1", purge_min_interval_seconds=60)
    body = b'{"model_id": null}'
    head = (
        b"POST /v1/models/purge HTTP/1.1\r\nHost: sidecar\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
    )
    try:
        connections = [
            await asyncio.open_connection(client.server.host, client.server.port) for _ in range(2)
        ]
        for _, writer in connections:
            writer.write(head)
            await writer.drain()
        await asyncio.sleep(0.2)  # both handlers are now waiting for their bodies
        for _, writer in connections:
            writer.write(body)
            await writer.drain()
        statuses = sorted([int((await reader.readline()).split()[1]) for reader, _ in connections])
        for _, writer in connections:
            writer.close()
        assert statuses == [200, 429]
    finally:
        await client.close()
