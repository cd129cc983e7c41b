"""What /health and /ready report of a worker, and the background checks that feed them.

- the watchdog (watchdog.py): a hung engine or a stalled intake makes the worker unhealthy for
  good, and `fail` stops it (it exits non-zero after a short grace);
- the image store is checked now and then: a worker that cannot store is not ready;
- the default model is loaded (and warmed up) on the engine thread while the consumer joins its
  group: with READY_REQUIRES_MODEL the worker is not ready before that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer.generation.engine import Engine, warmup_job
from consumer.ops.watchdog import WatchdogLimits, check_store, watch
from storage import ImageStore

if TYPE_CHECKING:
    from consumer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthConfig:
    default_model: str  # loaded and warmed up at start
    warmup: bool  # warm up at 512² (kernels chosen, compiled) rather than 64²
    ready_requires_model: bool  # /ready waits for the default model
    store_check_interval_seconds: float
    unhealthy_exit_grace_seconds: float  # how long an unhealthy worker answers before exiting
    limits: WatchdogLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthConfig:
        return cls(
            default_model=settings.default_model,
            warmup=settings.warmup,
            ready_requires_model=settings.ready_requires_model,
            store_check_interval_seconds=settings.store_check_interval_seconds,
            unhealthy_exit_grace_seconds=settings.unhealthy_exit_grace_seconds,
            limits=WatchdogLimits.from_settings(settings),
        )


class Health:
    def __init__(
        self,
        config: HealthConfig,
        engine: Engine,
        store: ImageStore,
        on_fail: Callable[[], None],
        draining: Callable[[], bool],
    ) -> None:
        """`draining`: whether the worker is stopping; its intake loop then stands still on
        purpose, and only the engine is watched."""
        self._config = config
        self._engine = engine
        self._store = store
        self._on_fail = on_fail
        self.unhealthy: str | None = None  # why the watchdog gave up on this worker
        self._failed_at = 0.0
        self.store_problem: str | None = None  # why the image store failed its last check
        self.model_problem: str | None = None
        self._model_ready = asyncio.Event()  # the default model is loaded (or failed to)
        self._last_step: float | None = None  # the intake loop's last step; None: not started
        self._draining = draining

    def fail(self, reason: str) -> None:
        """Give up on this process: the worker stops and exits non-zero after a short grace."""
        if self.unhealthy is None:
            self.unhealthy = reason
            self._failed_at = time.monotonic()
            log.error("worker unhealthy: %s; stopping", reason)
        self._on_fail()

    async def linger(self) -> None:
        """Once unhealthy, keep answering (/health 503 with the reason) until the exit grace
        has passed since the failure, even when nothing was left to drain: probes and
        operators see why the process is about to exit."""
        if self.unhealthy is not None:
            left = self._config.unhealthy_exit_grace_seconds - (time.monotonic() - self._failed_at)
            await asyncio.sleep(max(0.0, left))

    def step(self) -> None:
        """The intake loop (or a retry it waits on) moved: it is not stuck."""
        self._last_step = time.monotonic()

    async def model_loaded(self) -> None:
        """Until the default model is loaded and warm (or failed to load)."""
        await self._model_ready.wait()

    def readiness_problem(self) -> str | None:
        if self._config.ready_requires_model:
            if not self._model_ready.is_set():
                return "loading the default model"
            if self.model_problem:
                return self.model_problem
        return self.store_problem

    def start(self, engine_thread: Executor) -> list[asyncio.Task[None]]:
        interval = self._config.store_check_interval_seconds
        return [
            asyncio.create_task(
                watch(self._config.limits, self._engine, self._last_intake_step, self.fail)
            ),
            asyncio.create_task(check_store(self._store, interval, self._store_checked)),
            asyncio.create_task(self._preload(engine_thread)),
        ]

    def _last_intake_step(self) -> float:
        """The watchdog's intake rule holds only while the loop runs: not while the worker
        waits for its group join or, with JOIN_AFTER_WARMUP, for a model load that may take
        minutes (that load is watched as a load), and not while it drains."""
        if self._last_step is None or self._draining():
            return time.monotonic()
        return self._last_step

    def _store_checked(self, problem: str | None) -> None:
        self.store_problem = problem

    def _warm_up(self) -> None:
        """On the engine thread (where the engine is built first: engine/starting.py): a 512²
        image on CUDA or with WARMUP (kernels chosen, compiled), else a 64² one."""
        config = self._config
        warm = config.warmup or self._engine.describe().get("device") == "cuda"
        self._engine.generate([warmup_job(config.default_model, 512 if warm else 64)], 0)

    async def _preload(self, engine_thread: Executor) -> None:
        """The default model loaded and warmed up on the engine thread, so that the first
        request pays neither the imports nor the load."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(engine_thread, self._warm_up)
            log.info("default model ready", extra={"model": self._config.default_model})
        except Exception as exc:  # EngineError or worse: its requests will say so; we go on
            log.warning("default model failed to load: %s", exc)
            self.model_problem = "the default model failed to load"
        finally:
            self._model_ready.set()
