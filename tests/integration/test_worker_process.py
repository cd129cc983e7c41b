"""The worker as operators run it: a process that gets SIGTERM or kill -9 mid-backlog."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from consumer.settings import Settings
from tests.integration.kafka_tools import (
    assert_nothing_committed_without_a_result,
    backlog,
    collect,
    collect_until,
    results,
    running_worker,
    settings_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def start_worker_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings_env(settings)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "--env-file", "/nonexistent", "run"],
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
