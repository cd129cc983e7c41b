"""The small config of the triage, cut from the settings by the worker."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from schemas import RequestLimits

if TYPE_CHECKING:
    from consumer.settings import Settings


@dataclass(frozen=True)
class TriageConfig:
    limits: RequestLimits  # what validation admits
    default_negative_prompt: str  # for requests without one (audit policy `standard`)
    max_request_age_seconds: float  # a record older than this is expired; 0: no limit
    clock_skew_seconds: float  # allowance for a producer's clock (intake/clocks.py)
    reuse_stored_images: bool  # answer a request from its stored images (REUSE_STORED_IMAGES)
    max_batch_size: int  # images per engine call
    max_batch_cost: float  # cost per engine call; 0: no bound
    model_revisions: Mapping[str, str]  # hub model id -> its pinned revision (MODEL_REVISIONS)
    max_attempts: int = 3  # crashes on record before attempts_exhausted; 0: no guard
    synthetic: bool = False  # ENGINE=simulated: the images drawn are synthetic

    @classmethod
    def from_settings(cls, settings: Settings) -> TriageConfig:
        return cls(
            limits=settings.request_limits(),
            default_negative_prompt=settings.default_negative_prompt,
            max_request_age_seconds=settings.max_request_age_seconds,
            clock_skew_seconds=settings.clock_skew_seconds,
            reuse_stored_images=settings.reuse_stored_images,
            max_batch_size=settings.max_batch_size,
            max_batch_cost=settings.max_batch_cost,
            model_revisions=settings.pinned_revisions(),
            max_attempts=settings.max_attempts,
            synthetic=settings.engine == "simulated",
        )
