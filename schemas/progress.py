"""Progress events (contract 1.1) on `generation.progress`, keyed by request_id.

Informational and best effort: a worker may skip or coalesce them, and a client must never wait
on one; the result event on `generation.results` stays the only answer a request gets.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.request import RequestId
from schemas.times import format_utc

Stage = Literal["queued", "started", "step", "finished"]
# What `ts` looks like: format_utc's output, UTC with a "Z" (milliseconds optional for readers).
UTC_TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"


class ProgressEvent(BaseModel):
    """One stage of one request: `queued` (accepted, waiting for the engine), `started` (its
    engine call began), `step` (denoising step `step` of `total_steps` done), `finished` (the
    engine is done with it; its result follows)."""

    # Readers ignore fields a newer worker adds: progress is for display, never for decisions.
    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: RequestId
    stage: Stage
    step: int | None = Field(None, ge=0, description="Steps done; set for `step` events.")
    total_steps: int | None = Field(None, ge=1, description="Steps in all, when known.")
    ts: str = Field(
        pattern=UTC_TIMESTAMP_PATTERN, description="When it happened: RFC 3339, UTC ('Z')."
    )

    @model_validator(mode="after")
    def _check_steps(self) -> ProgressEvent:
        if self.stage == "step" and self.step is None:
            raise ValueError("a `step` event needs `step`")
        if self.step is not None and self.total_steps is not None and self.step > self.total_steps:
            raise ValueError("`step` cannot exceed `total_steps`")
        return self

    @property
    def fraction(self) -> float | None:
        """Share of the steps done (1.0 once finished), or None when unknown."""
        if self.stage == "finished":
            return 1.0
        if self.step is None or not self.total_steps:
            return None
        return self.step / self.total_steps


def progress_event(
    request_id: str,
    stage: Stage,
    step: int | None = None,
    total_steps: int | None = None,
    now: datetime | None = None,
) -> ProgressEvent:
    """A progress event stamped `now` (default: the current time) in UTC."""
    return ProgressEvent(
        request_id=request_id, stage=stage, step=step, total_steps=total_steps, ts=format_utc(now)
    )


def parse_progress(raw: bytes | None) -> ProgressEvent | None:
    """The event in `raw`, or None for anything that is not one (never raises)."""
    if not raw:
        return None
    try:
        return ProgressEvent.model_validate_json(raw)
    except ValueError:  # ValidationError is one
        return None
