"""The worker as operators run it: a process that gets SIGTERM or kill -9 mid-backlog, loses its
broker while stopping, or hangs in its engine."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from consumer.devtools.processes import free_port
from consumer.devtools.services import TansuBroker, create_topics
from consumer.settings import Settings
from consumer.worker import EXIT_UNHEALTHY
from storage import ImageStore, build_store
from tests.integration.kafka_tools import (
    assert_nothing_committed_without_a_result,
    backlog,
    collect,
    collect_until,
    committed_and_end,
    produce,
    request,
    results,
    running_worker,
    settings_env,
)
from tests.unit.journals import crashes_if_all_died

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


WORKER_COMMAND = ["-m", "consumer", "--env-file", "/nonexistent", "run"]


def start_worker_process(
    settings: Settings, log: Path, command: list[str] = WORKER_COMMAND
) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *command],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def finish_backlog(settings: Settings, placed: dict[str, tuple[int, int]]) -> None:
    """A fresh worker takes over; in the end every request has at least one result."""
    bootstrap = settings.kafka_bootstrap_servers
    async with running_worker(settings):
        records = await collect_until(bootstrap, settings.result_topic, set(placed), timeout=120)
    by_id = results(records)
    assert set(placed) <= set(by_id), f"lost: {sorted(set(placed) - set(by_id))}"
    assert all(r.status == "completed" for rs in by_id.values() for r in rs)


async def wait_for_first_result(settings: Settings, proc: subprocess.Popen[bytes]) -> None:
    first = await collect(settings.kafka_bootstrap_servers, settings.result_topic, 1, timeout=90)
    assert first, f"no result from the worker process (exit code {proc.poll()})"


async def signal_after_first_result(settings: Settings, log: Path, sig: signal.Signals) -> int:
    """Start a worker process on the backlog; once it has published a result, send `sig`."""
    proc = start_worker_process(settings, log)
    try:
        await wait_for_first_result(settings, proc)
        proc.send_signal(sig)
        return await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_sigterm_drains_publishes_commits_and_exits_0(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(max_batch_size=2)
    placed = await backlog(settings)
    code = await signal_after_first_result(settings, tmp_path / "worker.log", signal.SIGTERM)
    log = (tmp_path / "worker.log").read_text()
    assert code == 0, log[-3000:]
    assert '"worker stopped"' in log
    secret = settings.aws_secret_access_key
    assert secret is None or secret.get_secret_value() not in log  # secrets never logged
    published = await assert_nothing_committed_without_a_result(settings, placed)
    assert published  # it did work before stopping
    await finish_backlog(settings, placed)


async def test_kill_9_mid_backlog_loses_nothing(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(max_batch_size=2)
    placed = await backlog(settings)
    await signal_after_first_result(settings, tmp_path / "worker.log", signal.SIGKILL)
    await assert_nothing_committed_without_a_result(settings, placed)
    await finish_backlog(settings, placed)


async def test_sigterm_during_a_broker_outage_exits_within_the_drain_bound(
    durable_broker: TansuBroker, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """The broker dies mid-backlog, then the worker gets SIGTERM: it gives up on the broker at
    the drain deadline, exits, and leaves what it could not publish uncommitted."""
    drain = 5.0
    settings = make_settings(
        kafka_bootstrap_servers=durable_broker.bootstrap_servers,
        max_batch_size=2,
        drain_timeout_seconds=drain,
    )
    placed = await backlog(settings)
    log = tmp_path / "worker.log"
    proc = start_worker_process(settings, log)
    try:
        await wait_for_first_result(settings, proc)
        await asyncio.to_thread(durable_broker.kill)
        await asyncio.sleep(1.0)  # the worker notices: publishes and polls fail
        stopped_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == 0, log.read_text()[-3000:]
    assert took < drain + 10, f"exit took {took:.1f}s with DRAIN_TIMEOUT_SECONDS={drain:g}"
    await asyncio.to_thread(durable_broker.start)  # back, with its data
    await assert_nothing_committed_without_a_result(settings, placed)
    await finish_backlog(settings, placed)


async def test_a_hung_engine_turns_health_503_and_the_process_exits_non_zero(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    port = free_port()
    settings = make_settings(
        app_port=port,
        generation_timeout_seconds=1,
        engine_grace_seconds=2,
        unhealthy_exit_grace_seconds=1,
    )
    bootstrap = settings.kafka_bootstrap_servers
    await produce(bootstrap, settings.request_topic, [request("hangs", seed=1)])
    log = tmp_path / "worker.log"
    proc = start_worker_process(settings, log, ["-m", "tests.integration.hung_worker"])
    try:
        health = await _wait_for_unhealthy(f"http://127.0.0.1:{port}/health", proc, log)
        assert health["status"] == "unhealthy" and "generating" in health["reason"]
        code = await asyncio.to_thread(proc.wait, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert code == EXIT_UNHEALTHY, log.read_text()[-3000:]
    committed, _ = await committed_and_end(bootstrap, settings.group_id, settings.request_topic)
    assert sum(committed.values()) == 0  # the stuck request is delivered again
    assert not await collect(bootstrap, settings.result_topic, 1, timeout=2)


async def _wait_for_unhealthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> dict[str, str]:
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                async with http.get(url) as response:
                    if response.status == 503:
                        return dict(await response.json())
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    tail = log.read_text()[-3000:]
    raise AssertionError(f"/health never answered 503 (exit code {proc.poll()}): {tail}")


async def test_a_request_that_kills_workers_three_times_is_given_up_and_the_rest_complete(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """kill -9 the worker while one chosen request runs, three times (as the kernel's OOM
    killer would): the next delivery answers attempts_exhausted, the requests behind complete."""
    settings = make_settings(kafka_session_timeout_ms=3000, max_attempts=3)
    bootstrap = settings.kafka_bootstrap_servers
    await create_topics(bootstrap, [settings.request_topic], 1)
    poison = request("poison", steps=50, width=512, height=512, seed=1)  # seconds of work
    behind = [f"behind-{i}" for i in range(3)]
    events = [poison, *(request(name, seed=i) for i, name in enumerate(behind))]
    await produce(bootstrap, settings.request_topic, events, key=b"one-partition")
    store = build_store(settings)
    topic, prefix = settings.request_topic, settings.s3_key_prefix
    for attempt in (1, 2, 3):
        proc = start_worker_process(settings, tmp_path / f"worker-{attempt}.log")
        try:
            await _wait_for_attempt(store, topic, prefix, attempt, proc)
        finally:
            proc.kill()  # SIGKILL while the poison request runs
            await asyncio.to_thread(proc.wait, 30)
    async with running_worker(settings):
        names = {"poison", *behind}
        records = await collect_until(bootstrap, settings.result_topic, names, timeout=120)
    by_id = results(records)
    final = by_id["poison"][-1]
    assert final.status == "failed" and final.error is not None
    assert final.error.code == "attempts_exhausted"
    assert all(by_id[name][-1].status == "completed" for name in behind)
    assert crashes_if_all_died(store, 4, topic, prefix) == {}  # all four committed


async def _wait_for_attempt(
    store: ImageStore, topic: str, prefix: str, attempt: int, proc: subprocess.Popen[bytes]
) -> None:
    """Until the poison request (offset 0) runs on the engine with attempt - 1 crashes on
    record: a kill now is its attempt-th crash. The requests behind it are not counted."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if await asyncio.to_thread(crashes_if_all_died, store, 0, topic, prefix) == {0: attempt}:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"attempt {attempt} never recorded (exit code {proc.poll()})")
