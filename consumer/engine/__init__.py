"""The engine: turns generation jobs into images. See protocol.py for the contract."""

from __future__ import annotations

from typing import TYPE_CHECKING

from consumer.engine.jobs import CUSTOM_POLICY, STANDARD_POLICY, GenerationJob, plan_job
from consumer.engine.protocol import CacheStats, Engine, EngineError, JobOutput, PurgeResult

if TYPE_CHECKING:
    from consumer.settings import Settings

__all__ = [
    "CUSTOM_POLICY",
    "STANDARD_POLICY",
    "CacheStats",
    "Engine",
    "EngineError",
    "GenerationJob",
    "JobOutput",
    "PurgeResult",
    "build_engine",
    "plan_job",
]


def build_engine(settings: Settings) -> Engine:
    """The diffusers engine; imported here so that unit tests never pay for torch/diffusers."""
    from consumer.engine.diffusers_engine import DiffusersEngine

    return DiffusersEngine(settings)
