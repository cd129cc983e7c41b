"""Readiness follows the default model on a real broker, store and engine: a worker started with
JOIN_AFTER_WARMUP before its model is there stays out of its group and says why, keeps trying,
and joins and turns ready once the model can be loaded."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from consumer import app
from consumer.devtools.processes import free_port
from consumer.devtools.services import create_topics
from consumer.generation.engine.tiny_model import ensure_tiny_model
from consumer.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


async def get(port: int, route: str) -> tuple[int, dict[str, Any]]:
    """(status, body) of a sidecar route; (0, {}) before it listens."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}{route}") as response,
        ):
            return response.status, await response.json()
    except aiohttp.ClientError:
        return 0, {}


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


async def test_a_default_model_that_appears_late_is_joined_for_once_it_loads(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    model = tmp_path / "late-model"  # a local folder, copied in while the worker waits
    settings = make_settings(
        app_port=free_port(),
        default_model=str(model),
        allowed_models=[str(model)],
        join_after_warmup=True,
        model_retry_seconds=1,
    )
    await create_topics(settings.kafka_bootstrap_servers, [settings.request_topic], 1)
    port = settings.app_port
    serving = asyncio.create_task(app.serve(settings, exit_when_idle=3.0))

    async def refused_for_the_model() -> bool:
        status, body = await get(port, "/ready")
        return status == 503 and body["reason"].startswith("the default model failed to load")

    try:
        await until(refused_for_the_model, 60, "/ready to say the model failed to load")
        await asyncio.sleep(2.5)  # two more tries, still out of the group
        assert await refused_for_the_model()
        status, health = await get(port, "/health")
        assert status == 200 and health["status"] == "starting"
        assert health["partitions"] == [] and not serving.done()
        staged = tmp_path / "staging"
        shutil.copytree(ensure_tiny_model(settings.models_dir), staged)
        staged.rename(model)  # at once: a try never sees half a folder

        async def ready() -> bool:
            return (await get(port, "/ready"))[0] == 200

        await until(ready, 60, "ready once the model loads")
        status, health = await get(port, "/health")
        assert health["partitions"] and health["models_loaded"] == [str(model)]
    except BaseException:
        serving.cancel()
        raise
    assert await asyncio.wait_for(serving, 60) == 0  # idle for 3 s once it runs: it stops
