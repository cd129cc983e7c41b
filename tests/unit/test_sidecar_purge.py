"""Purge safety: no open purge beyond loopback, and at most one purge per interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import TopicPartition

from consumer.generation.engine import Engine
from consumer.generation.engine.fake import FakeEngine
from consumer.ops.metrics import WorkerMetrics
from consumer.ops.sidecar import SidecarConfig, build_app, is_loopback
from consumer.settings import Settings

KEY = "purge-key-0123456789"


class IdleWorker:
    """The slice of a worker the sidecar reads (its WorkerStatus protocol)."""

    def __init__(self) -> None:
        self.engine: Engine = FakeEngine()
        self.metrics = WorkerMetrics()
        self.draining = False
        self.unhealthy: str | None = None
        self.completed = 0
        self.broker_connected = True

    def not_ready_reason(self) -> str | None:
        return None

    def assignment(self) -> list[TopicPartition]:
        return []


async def client_for(**overrides: Any) -> TestClient[Any, Any]:
    settings = Settings(_env_file=None, default_model="fake", **overrides)
    client: TestClient[Any, Any] = TestClient(
        TestServer(build_app(SidecarConfig.from_settings(settings), IdleWorker()))
    )
    await client.start_server()
    return client


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
