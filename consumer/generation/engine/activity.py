"""What the engine thread is doing right now, for the watchdog on the event loop.

The engine marks the phases it enters (`loading` a model, `generating` images); the watchdog reads
a snapshot and compares each phase's age with its limit. Phases nest (a generation call that
first loads its model), so the snapshot lists them outermost first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOADING = "loading"
GENERATING = "generating"


@dataclass(frozen=True)
class Phase:
    name: str
    model: str
    since: float  # time.monotonic() when it began


class EngineActivity:
    """Thread-safe: written by the engine thread, read by the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: list[Phase] = []

    @contextmanager
    def phase(self, name: str, model: str) -> Iterator[None]:
        entry = Phase(name, model, time.monotonic())
        with self._lock:
            self._phases.append(entry)
        try:
            yield
        finally:
            with self._lock:
                self._phases.remove(entry)

    def snapshot(self) -> list[Phase]:
        with self._lock:
            return list(self._phases)
