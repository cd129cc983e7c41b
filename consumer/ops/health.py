"""What /health and /ready report of a worker, and the background checks that feed them.

- the watchdog (watchdog.py): a hung engine or a stalled intake makes the worker unhealthy for
  good, and `fail` stops it (it exits non-zero after a short grace);
- the image store is checked now and then: a worker that cannot store is not ready;
- the default model is loaded (and warmed up) on the engine thread while the consumer joins its
  group (or, with JOIN_AFTER_WARMUP, before it joins): with READY_REQUIRES_MODEL the worker is
  not ready before that. A load that fails is tried again every MODEL_RETRY_SECONDS (sooner
  when a request loads the model meanwhile) for as long as the worker runs: readiness follows
  the model, however late it loads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer.generation.engine import Engine, EngineError, warmup_job
from consumer.ops.watchdog import WatchdogLimits, check_store, watch
from storage import ImageStore

if TYPE_CHECKING:
    from consumer.settings import Settings

log = logging.getLogger(__name__)

# A default model that failed to load is tried again after MODEL_RETRY_SECONDS, but never more
# often than this (MODEL_RETRY_SECONDS=0 means "at once" to requests).
MIN_MODEL_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class HealthConfig:
    default_model: str  # loaded and warmed up at start
    warmup: bool  # warm up at 512² (kernels chosen, compiled) rather than 64²
    ready_requires_model: bool  # /ready waits for the default model
    model_retry_seconds: float  # a default model that failed to load is tried again after this
    join_after_warmup: bool  # the worker joins its group only once the default model is warm
    store_check_interval_seconds: float
    unhealthy_exit_grace_seconds: float  # how long an unhealthy worker answers before exiting
    limits: WatchdogLimits

    @classmethod
    def from_settings(cls, settings: Settings) -> HealthConfig:
        return cls(
            default_model=settings.default_model,
            warmup=settings.warmup,
            ready_requires_model=settings.ready_requires_model,
            model_retry_seconds=settings.model_retry_seconds,
            join_after_warmup=settings.join_after_warmup,
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
        self.model_problem: str | None = None  # why the last try to load the default model failed
        self._model_ready = asyncio.Event()  # the default model is loaded and warm
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
        """Until the default model is loaded and warm, however many tries that takes."""
        await self._model_ready.wait()

    def model_wait(self) -> str | None:
        """Why the default model is not loaded and warm yet; None once it is."""
        if self._model_ready.is_set():
            return None
        return self.model_problem or "loading the default model"

    def readiness_problem(self) -> str | None:
        if self._config.ready_requires_model and (waiting := self.model_wait()):
            return waiting
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
        request pays neither the imports nor the load; tried again until it works."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(engine_thread, self._warm_up)
                break
            except Exception as exc:  # EngineError or worse: its requests say so too
                self._failed_to_load(exc)
            await self._until_next_try()
        self.model_problem = None
        self._model_ready.set()
        log.info("default model ready", extra={"model": self._config.default_model})

    def _retry_seconds(self) -> float:
        return max(self._config.model_retry_seconds, MIN_MODEL_RETRY_SECONDS)

    def _failed_to_load(self, exc: Exception) -> None:
        detail = exc.message if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
        detail = (detail.strip().splitlines() or [type(exc).__name__])[0][:300]
        self.model_problem = f"the default model failed to load: {detail}"
        waits = "; the worker joins its group only once it loads"
        if not self._config.join_after_warmup:
            waits = ""
        log.warning(
            "default model failed to load, next try in %g s%s: %s",
            self._retry_seconds(),
            waits,
            detail,
            extra={"model": self._config.default_model},
        )

    async def _until_next_try(self) -> None:
        """MODEL_RETRY_SECONDS (at least MIN_MODEL_RETRY_SECONDS), or less when a request
        loads the default model meanwhile (a worker that joined before its warm-up)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_seconds()
        loaded_before = self._config.default_model in self._engine.loaded_models()
        while (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(left, 1.0))
            if not loaded_before and self._config.default_model in self._engine.loaded_models():
                return
