"""Running the worker process: store and engine built side by side, the sidecar, then the
consumer; signals only set an event."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import NoReturn, TypeVar

from consumer.engine import Engine, build_engine
from consumer.settings import Settings
from consumer.sidecar import start_sidecar
from consumer.worker import Worker
from storage import ImageStore, build_store

log = logging.getLogger(__name__)

T = TypeVar("T")


async def serve(
    settings: Settings,
    engine: Engine | None = None,
    store: ImageStore | None = None,
    exit_when_idle: float | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or idle, when asked): drain, commit, leave the group; return
    the exit code (0, or EXIT_UNHEALTHY when the watchdog gave up on the worker)."""
    loop = asyncio.get_running_loop()
    # Both in threads, side by side: the store's first request and torch's import overlap.
    built_store, built_engine = await asyncio.gather(
        asyncio.to_thread(build_store, settings) if store is None else _ready(store),
        asyncio.to_thread(build_engine, settings.engine_config())
        if engine is None
        else _ready(engine),
    )
    worker = Worker(settings, built_engine, built_store, exit_when_idle=exit_when_idle)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    # The sidecar starts before the consumer: consumer.start() returns only once partitions are
    # assigned, and health must answer meanwhile.
    runner = await start_sidecar(settings, worker) if settings.app_port else None
    try:
        await worker.run()
        await worker.health.linger()
    finally:
        if runner is not None:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return worker.exit_code


async def _ready(value: T) -> T:
    return value


def exit_process(code: int) -> NoReturn:
    """Exit without joining the worker's threads: after a hung engine call its thread never
    returns, and the interpreter's exit would wait for it forever."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
