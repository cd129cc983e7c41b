"""serve() (consumer/app.py): the worker joins its group while its engine is being built, and an
engine that cannot be built makes the worker exit unhealthy. A real broker and store; the engine
build is replaced, since torch's real one takes a second or two and cannot be made to fail."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest

from consumer import app
from consumer.devtools.processes import free_port
from consumer.devtools.services import create_topics
from consumer.generation.engine import Engine, EngineConfig
from consumer.generation.engine.fake import FakeEngine
from consumer.ops import startup_gc
from consumer.settings import Settings
from consumer.worker import EXIT_UNHEALTHY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

MakeSettings = Callable[..., Settings]


async def ready_reason(port: int) -> str | None:
    """/ready's reason for not being ready (None: ready); "unreachable" before it listens."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/ready") as response,
        ):
            reason: str | None = (await response.json())["reason"]
            return reason
    except aiohttp.ClientError:
        return "unreachable"


async def until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_the_group_is_joined_while_the_engine_is_built(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(app_port=free_port(), default_model="fake")
    await create_topics(settings.kafka_bootstrap_servers, [settings.request_topic], 1)
    release = threading.Event()

    def slow_build(config: EngineConfig) -> Engine:
        assert release.wait(60), "never released"
        return FakeEngine()

    monkeypatch.setattr(app, "build_engine", slow_build)
    startup_gc.pause()  # as `python -m consumer run` does: until the engine is built
    serving = asyncio.create_task(app.serve(settings, exit_when_idle=5.0))
    port = settings.app_port

    async def assigned() -> bool:  # partitions assigned, the default model not loaded yet
        return await ready_reason(port) == "loading the default model"

    async def ready() -> bool:
        return await ready_reason(port) is None

    try:
        await until(assigned, 60, "partitions assigned while the engine is built")
        assert not release.is_set() and not serving.done() and not gc.isenabled()
    finally:
        release.set()
    await until(ready, 30, "ready once the engine is built")
    assert gc.isenabled()  # back on once built
    assert await asyncio.wait_for(serving, 60) == 0  # idle for 5 s: it stops


async def test_an_engine_that_cannot_be_built_makes_the_worker_exit_unhealthy(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(unhealthy_exit_grace_seconds=0.5)

    def broken_build(config: EngineConfig) -> Engine:
        raise RuntimeError("no CUDA device")

    monkeypatch.setattr(app, "build_engine", broken_build)
    startup_gc.pause()
    assert await asyncio.wait_for(app.serve(settings), 60) == EXIT_UNHEALTHY
    assert gc.isenabled()  # back on after a failed build too


async def test_an_engine_build_that_hangs_makes_the_worker_exit_unhealthy(
    make_settings: MakeSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build that never returns (a CUDA driver that never answers) is a load to the watchdog:
    past MODEL_LOAD_TIMEOUT_SECONDS the worker turns unhealthy and exits, as before the sidecar
    started early, when a hung build left /health unanswered."""
    settings = make_settings(model_load_timeout_seconds=2, unhealthy_exit_grace_seconds=0.5)
    release = threading.Event()

    def hung_build(config: EngineConfig) -> Engine:
        release.wait(60)
        return FakeEngine()

    monkeypatch.setattr(app, "build_engine", hung_build)
    try:
        assert await asyncio.wait_for(app.serve(settings), 60) == EXIT_UNHEALTHY
    finally:
        release.set()  # the engine thread ends, so the interpreter can exit


@pytest.fixture(autouse=True)
def collector_on_after() -> Iterator[None]:
    yield
    startup_gc.resume()
    gc.enable()
