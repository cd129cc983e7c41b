"""Running the worker process: the engine built on its thread while the store is built and the
consumer joins its group (engine/starting.py), the sidecar meanwhile; signals only set an event."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import NoReturn

from consumer.generation.engine import Engine, EngineConfig, build_engine
from consumer.generation.engine.starting import StartingEngine
from consumer.ops import startup_gc
from consumer.ops.sidecar import SidecarConfig, start_sidecar
from consumer.settings import Settings
from consumer.worker import Worker
from storage import ImageStore, build_store

log = logging.getLogger(__name__)


async def serve(
    settings: Settings,
    engine: Engine | None = None,
    store: ImageStore | None = None,
    exit_when_idle: float | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or idle, when asked): drain, commit, leave the group; return
    the exit code (0, or EXIT_UNHEALTHY when the watchdog gave up on the worker)."""
    loop = asyncio.get_running_loop()
    engine_thread = ThreadPoolExecutor(1, thread_name_prefix="engine")
    starting = None
    if engine is None:  # built first on the engine thread; nothing waits for it here
        build = partial(_build_engine, settings.engine_config())
        engine = starting = StartingEngine(build, engine_thread)
        loop.call_later(startup_gc.LONGEST_PAUSE_SECONDS, startup_gc.resume)  # a build that hangs
    if store is None:
        store = await asyncio.to_thread(build_store, settings)
    if settings.engine == "simulated":
        log.warning(
            "ENGINE=simulated: every request on %s (group %s) is answered with synthetic images",
            " and ".join(t for t in (settings.request_topic, settings.priority_topic) if t),
            settings.group_id,
        )
    worker = Worker(
        settings, engine, store, exit_when_idle=exit_when_idle, engine_thread=engine_thread
    )
    watching = asyncio.create_task(_fail_unless_built(starting, worker))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    # The sidecar starts before the consumer: consumer.start() returns only once partitions are
    # assigned, and health must answer meanwhile.
    runner = (
        await start_sidecar(SidecarConfig.from_settings(settings), worker)
        if settings.app_port
        else None
    )
    try:
        await worker.run()
        await worker.health.linger()
    finally:
        watching.cancel()
        if runner is not None:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return worker.exit_code


def _build_engine(config: EngineConfig) -> Engine:
    """On the engine thread: the engine (torch's and diffusers' imports), then Python's garbage
    collector back on (startup_gc.py), while the group join is still under way."""
    try:
        return build_engine(config)
    finally:
        startup_gc.resume()


async def _fail_unless_built(starting: StartingEngine | None, worker: Worker) -> None:
    """An engine that cannot be built (torch cannot start, no such device) fails the worker:
    it exits non-zero, as a worker that cannot generate should."""
    if starting is None:
        return
    try:
        await asyncio.wrap_future(starting.building)
    except Exception as exc:
        log.exception("the engine could not be built")
        worker.fail(f"the engine could not be built: {exc}")


def exit_process(code: int) -> NoReturn:
    """Exit without joining the worker's threads: after a hung engine call its thread never
    returns, and the interpreter's exit would wait for it forever."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
