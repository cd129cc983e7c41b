"""The engine seen by the worker: a small protocol with a diffusers, a simulated (load tests)
and a fake (unit tests) implementation."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from PIL.Image import Image

from consumer.generation.engine.activity import EngineActivity
from consumer.generation.engine.jobs import GenerationJob
from schemas import ErrorCode


class EngineError(Exception):
    """A generation that could not produce images; `code` is the contract's stable error code.

    `transient`: the same call may well succeed soon (memory was short), so a failed model load
    is not remembered by the cache."""

    def __init__(self, code: ErrorCode, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.transient = transient


class RequestsStopped(EngineError):
    """Some requests of a batch must stop (cancelled, past their deadline): the run stopped at a
    step boundary, and the other requests of the batch may run again (their seeds give the same
    images)."""

    def __init__(self, codes: Mapping[str, ErrorCode]) -> None:
        super().__init__(next(iter(codes.values())), f"stopped: {sorted(codes)}")
        self.codes = dict(codes)


# Called by the engine thread after each denoising step with (steps done, total steps); it may
# raise RequestsStopped to stop the run there.
StepHook = Callable[[int, int], None]


@dataclass(frozen=True)
class JobOutput:
    job: GenerationJob
    images: list[Image]  # one per seed, same order
    duration_sec: float  # wall time of the pipeline call that produced it (shared by its batch)
    # What the engine says of these images, for audit.note in place of the model's own note
    # (the simulated engine: they are synthetic); None: the model's note, if it has one.
    note: str | None = None


def one_batch(jobs: Sequence[GenerationJob]) -> GenerationJob:
    """The first job, once every job shares its batch key (one pipeline call serves them)."""
    first = jobs[0]
    if any(job.batch_key != first.batch_key for job in jobs):
        raise ValueError("a batch must share model, size, steps and cfg")
    return first


def split_outputs(
    jobs: Sequence[GenerationJob], images: list[Image], duration: float, note: str | None = None
) -> list[JobOutput]:
    """One engine call's images (jobs' seeds in order) handed back to their jobs."""
    outputs, offset = [], 0
    for job in jobs:
        outputs.append(JobOutput(job, images[offset : offset + job.num_images], duration, note))
        offset += job.num_images
    return outputs


@dataclass(frozen=True)
class PurgeResult:
    model_id: str | None
    removed: list[str]
    remaining: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"model_id": self.model_id, "removed": self.removed, "remaining": self.remaining}


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    evictions: int = 0
    failed_loads: int = 0  # load attempts that failed
    refused_loads: int = 0  # requests failed at once: their model's last load failed recently
    loaded_bytes: int = 0  # parameters and buffers of the loaded pipelines
    load_seconds: dict[str, float] = field(default_factory=dict)


class Engine(Protocol):
    """Synchronous on purpose: the worker runs it on its own thread, never on the event loop."""

    @property
    def activity(self) -> EngineActivity:
        """The phases it is in, read by the watchdog."""
        ...

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: threading.Event | None = None,
        on_step: StepHook | None = None,
    ) -> list[JobOutput]:
        """Generate every image of `jobs` (all with one batch key) in one call.

        `on_step` runs after each denoising step; a RequestsStopped it raises ends the call.

        Raises EngineError with code `timeout` once `timeout_seconds` (0 = no limit) have passed
        at a denoising step boundary, `model_unavailable` when the model cannot be loaded (not
        enough memory to load it included), `out_of_memory` when the batch does not fit in
        memory (memory is freed first: a smaller batch may fit), and `generation_failed`
        otherwise. The engine stays usable after any of them."""
        ...

    def loaded_models(self) -> list[str]: ...

    def purge(self, model_id: str | None = None) -> PurgeResult: ...

    @property
    def stats(self) -> CacheStats: ...

    def describe(self) -> dict[str, object]:
        """Device, dtype and similar facts for /health and logs."""
        ...
