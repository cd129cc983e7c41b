"""The watchdog's rules: when is the worker hung rather than busy?

Pure functions over a snapshot (engine phases, the age of the intake loop's last step), so the
rules are tested without threads; the worker evaluates them every second and, on a verdict,
reports unhealthy, stops intake and exits non-zero so that an orchestrator restarts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consumer.generation.engine import Engine
from consumer.generation.engine.activity import LOAD_PHASES, Phase
from storage import ImageStore, StorageError

if TYPE_CHECKING:
    from consumer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchdogLimits:
    load_seconds: float  # a model load (downloads included), or a compilation
    # An engine call without a denoising step (since it began, or since its last step) for
    # this long is hung; None: generations are not watched.
    generation_seconds: float | None
    poll_age_seconds: float  # the intake loop must take a step at least this often

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchdogLimits:
        # The soft timeout (GENERATION_TIMEOUT_SECONDS) is checked at denoising step boundaries
        # only, and ends a call at the first boundary past it with `timeout`. The hard limit is
        # that timeout plus a grace, counted from the call's start and again from each step's
        # end: a call that keeps stepping (one CPU step of minutes included) reaches its next
        # boundary and gets `timeout`, never exit 70; only a step, or the VAE decode after the
        # last one, that alone takes longer than timeout + grace is taken for a hang.
        timeout = settings.generation_timeout_seconds
        return cls(
            load_seconds=settings.model_load_timeout_seconds,
            generation_seconds=timeout + settings.engine_grace_seconds if timeout else None,
            poll_age_seconds=settings.max_poll_age_seconds,
        )


def engine_overdue(phases: Sequence[Phase], now: float, limits: WatchdogLimits) -> str | None:
    """Why the engine counts as hung, or None while every phase is within its limit: a load or
    a compilation by its age, a generation by the time since its last step (or its start)."""
    for phase in phases:
        if phase.name in LOAD_PHASES:
            limit, age = limits.load_seconds, now - phase.since
            if age > limit:
                return (
                    f"engine {phase.name} {phase.model!r} for {age:.0f}s, over its {limit:g}s limit"
                )
        elif limits.generation_seconds is not None:
            limit, age = limits.generation_seconds, now - phase.moved
            if age > limit:
                since = "its start" if phase.last_step is None else "its last denoising step"
                return (
                    f"engine {phase.name} {phase.model!r} for {now - phase.since:.0f}s, "
                    f"{age:.0f}s since {since}: over its {limit:g}s limit"
                )
    return None


def intake_stalled(last_step: float, now: float, limits: WatchdogLimits) -> str | None:
    age = now - last_step
    if age > limits.poll_age_seconds:
        return f"intake loop stalled: no step for {age:.0f}s (limit {limits.poll_age_seconds:g}s)"
    return None


def verdict(
    phases: Sequence[Phase], last_step: float, now: float, limits: WatchdogLimits
) -> str | None:
    return engine_overdue(phases, now, limits) or intake_stalled(last_step, now, limits)


async def watch(
    limits: WatchdogLimits,
    engine: Engine,
    last_intake_step: Callable[[], float],
    fail: Callable[[str], None],
) -> None:
    """Every second, the verdict on the engine's phases and the intake loop; `fail` on one."""
    while True:
        await asyncio.sleep(1.0)
        now = time.monotonic()
        reason = verdict(engine.activity.snapshot(), last_intake_step(), now, limits)
        if reason is not None:
            fail(reason)


async def check_store(
    store: ImageStore, interval: float, report: Callable[[str | None], None]
) -> None:
    """Readiness follows the image store: a worker that cannot store should take no requests."""
    problem: str | None = None
    while True:
        try:
            await asyncio.to_thread(store.check)
            problem = None
        except StorageError as exc:
            if problem is None:
                log.warning("image store check failed: %s", exc)
            problem = "image store unreachable"
        report(problem)
        await asyncio.sleep(interval)
