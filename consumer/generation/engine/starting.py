"""The engine while it is being built, so that the worker need not wait for it to start.

Building the diffusers engine imports torch and diffusers: ~3 s of CPU on a small box, seconds
more with CUDA. Meanwhile the worker can already join its consumer group, which takes seconds of
its own (Kafka holds a new group's first rebalance for `group.initial.rebalance.delay.ms`, 3 s by
default; the embedded Tansu broker answers a join after half the session timeout), and answer
/health. So the worker is built around this stand-in, and the build runs first on the engine
thread: whatever runs there later (the warm-up, every generation) finds the engine built.
Questions asked from elsewhere before then (the sidecar's) get "nothing loaded yet" answers.
The build counts as a model load for the watchdog: one that hangs (a CUDA driver that never
answers) makes the worker unhealthy after MODEL_LOAD_TIMEOUT_SECONDS, as a hung load would.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future

from consumer.generation.engine.activity import LOADING, EngineActivity
from consumer.generation.engine.jobs import GenerationJob
from consumer.generation.engine.protocol import CacheStats, Engine, JobOutput, PurgeResult, StepHook

BUILDING = "the engine"  # the "model" of the loading phase that the build is


class StartingEngine:
    def __init__(self, build: Callable[[], Engine], thread: Executor) -> None:
        """Starts `build` on `thread` (the engine thread, before anything else runs there)."""
        self._starting = EngineActivity()  # the watchdog's view until the engine exists
        self.building: Future[Engine] = thread.submit(self._build, build)

    def _build(self, build: Callable[[], Engine]) -> Engine:
        with self._starting.phase(LOADING, BUILDING):
            return build()

    @property
    def activity(self) -> EngineActivity:
        built = self._built()
        return built.activity if built is not None else self._starting

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None = None,
        on_step: StepHook | None = None,
    ) -> list[JobOutput]:
        """Waits for the build (raises what the build raised)."""
        return self.building.result().generate(jobs, timeout_seconds, cancel, on_step)

    def loaded_models(self) -> list[str]:
        built = self._built()
        return built.loaded_models() if built is not None else []

    def purge(self, model_id: str | None = None) -> PurgeResult:
        built = self._built()
        return built.purge(model_id) if built is not None else PurgeResult(model_id, [], [])

    @property
    def stats(self) -> CacheStats:
        built = self._built()
        return built.stats if built is not None else CacheStats()

    def describe(self) -> dict[str, object]:
        built = self._built()
        return built.describe() if built is not None else {"engine": "starting"}

    def _built(self) -> Engine | None:
        if self.building.done() and self.building.exception() is None:
            return self.building.result()
        return None
