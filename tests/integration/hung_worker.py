"""A worker process whose engine hangs on every generation, deaf to timeouts and cancels (as a
CUDA hang or a stalled decode would be): `python -m tests.integration.hung_worker`, configured
through the environment like `python -m consumer run`. For the watchdog's process test."""

from __future__ import annotations

import asyncio
import threading

from consumer.app import exit_process, serve
from consumer.generation.engine.fake import FakeEngine
from consumer.ops.logs import configure_logging
from consumer.settings import load_settings


def main() -> None:
    settings = load_settings(None)
    configure_logging(settings.log_level)
    engine = FakeEngine(hang=threading.Event())  # never set
    exit_process(asyncio.run(serve(settings, engine=engine)))


if __name__ == "__main__":
    main()
