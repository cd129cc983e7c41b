"""What the engine thread is doing right now, for the watchdog on the event loop.

The engine marks the phases it enters (`loading` a model, `compiling` it for a new shape,
`generating` images) and, while generating, each denoising step it finishes; the watchdog reads
a snapshot and compares each phase's age (a generation's: since its last step) with its limit.
Phases nest (a generation call that first loads its model), so the snapshot lists them
outermost first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

LOADING = "loading"
# The first call of a compiled pipeline for an input shape (torch.compile compiles then): a
# load to the watchdog, until its first denoising step ends; it is `generating` from then on.
COMPILING = "compiling"
GENERATING = "generating"
LOAD_PHASES = frozenset({LOADING, COMPILING})  # judged by the load limit


@dataclass(frozen=True)
class Phase:
    name: str
    model: str
    since: float  # time.monotonic() when it began
    last_step: float | None = None  # when its last denoising step ended; None: none yet

    @property
    def moved(self) -> float:
        """When it last made progress: its last step's end, else its start."""
        return self.since if self.last_step is None else self.last_step


class PhaseMark:
    """A phase under way, as the engine thread sees it: it reports the steps it finishes."""

    def __init__(self, lock: threading.Lock, name: str, model: str) -> None:
        self._lock = lock
        self.name = name
        self.model = model
        self.since = time.monotonic()
        self.last_step: float | None = None

    def step(self) -> bool:
        """A denoising step ended. True when that ended a compilation: the phase is
        `generating` from now on."""
        with self._lock:
            self.last_step = time.monotonic()
            compiled = self.name == COMPILING
            if compiled:
                self.name = GENERATING
            return compiled

    def frozen(self) -> Phase:
        return Phase(self.name, self.model, self.since, self.last_step)


class EngineActivity:
    """Thread-safe: written by the engine thread, read by the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: list[PhaseMark] = []

    @contextmanager
    def phase(self, name: str, model: str) -> Iterator[PhaseMark]:
        entry = PhaseMark(self._lock, name, model)
        with self._lock:
            self._phases.append(entry)
        try:
            yield entry
        finally:
            with self._lock:
                self._phases.remove(entry)

    def snapshot(self) -> list[Phase]:
        with self._lock:
            return [entry.frozen() for entry in self._phases]
