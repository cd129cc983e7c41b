"""Running the worker process: sidecar first, then the consumer; signals only set an event."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import NoReturn

from consumer.engine import STANDARD_POLICY, Engine, EngineError, GenerationJob, build_engine
from consumer.settings import Settings
from consumer.sidecar import start_sidecar
from consumer.worker import Worker
from storage import ImageStore, build_store

log = logging.getLogger(__name__)


def warm_up(engine: Engine, settings: Settings) -> None:
    """Load the default model and run one small image, before taking partitions: the first
    request then pays no load, compile or kernel-selection cost."""
    job = GenerationJob(
        "warmup", "warmup", "", STANDARD_POLICY, settings.default_model, 512, 512, 1, 0.0, (0,)
    )
    try:
        engine.generate([job], 0)
    except EngineError as exc:
        log.warning("warmup failed: %s", exc.message)


async def serve(
    settings: Settings,
    engine: Engine | None = None,
    store: ImageStore | None = None,
    exit_when_idle: float | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or idle, when asked): drain, commit, leave the group; return
    the exit code (0, or EXIT_UNHEALTHY when the watchdog gave up on the worker)."""
    loop = asyncio.get_running_loop()
    if store is None:
        store = await loop.run_in_executor(None, build_store, settings)
    engine = engine or build_engine(settings.engine_config())
    if settings.warmup:
        await loop.run_in_executor(None, warm_up, engine, settings)
    worker = Worker(settings, engine, store, exit_when_idle=exit_when_idle)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    # The sidecar starts before the consumer: consumer.start() returns only once partitions are
    # assigned, and health must answer meanwhile.
    runner = await start_sidecar(settings, worker) if settings.app_port else None
    try:
        await worker.run()
    finally:
        if runner is not None:
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return worker.exit_code


def exit_process(code: int) -> NoReturn:
    """Exit without joining the worker's threads: after a hung engine call its thread never
    returns, and the interpreter's exit would wait for it forever."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
