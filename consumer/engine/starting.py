"""The engine while it is being built, so that the worker need not wait for it to start.

Building the diffusers engine imports torch and diffusers: ~3 s of CPU on a small box, seconds
more with CUDA. Meanwhile the worker can already join its consumer group, which takes seconds of
its own (Kafka holds a new group's first rebalance for `group.initial.rebalance.delay.ms`, 3 s by
default; the embedded Tansu broker answers a join after half the session timeout), and answer
/health. So the worker is built around this stand-in, and the build runs first on the engine
thread: whatever runs there later (the warm-up, every generation) finds the engine built.
Questions asked from elsewhere before then (the sidecar's) get "nothing loaded yet" answers.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future

from consumer.engine.activity import EngineActivity
from consumer.engine.jobs import GenerationJob
from consumer.engine.protocol import CacheStats, Engine, JobOutput, PurgeResult, StepHook


class StartingEngine:
    def __init__(self, building: Future[Engine]) -> None:
        self._building = building
        self._idle = EngineActivity()  # the watchdog's view until the engine exists

    @property
    def activity(self) -> EngineActivity:
        built = self._built()
        return built.activity if built is not None else self._idle

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None = None,
        on_step: StepHook | None = None,
    ) -> list[JobOutput]:
        """Waits for the build (raises what the build raised)."""
        return self._building.result().generate(jobs, timeout_seconds, cancel, on_step)

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
        if self._building.done() and self._building.exception() is None:
            return self._building.result()
        return None
