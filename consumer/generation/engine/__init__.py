"""The engine: turns generation jobs into images. See protocol.py for the contract."""

from __future__ import annotations

from consumer.generation.engine.config import EngineConfig
from consumer.generation.engine.jobs import (
    CUSTOM_POLICY,
    STANDARD_POLICY,
    GenerationJob,
    plan_job,
    warmup_job,
)
from consumer.generation.engine.protocol import (
    CacheStats,
    Engine,
    EngineError,
    JobOutput,
    PurgeResult,
    RequestsStopped,
    StepHook,
)

__all__ = [
    "CUSTOM_POLICY",
    "STANDARD_POLICY",
    "CacheStats",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GenerationJob",
    "JobOutput",
    "PurgeResult",
    "RequestsStopped",
    "StepHook",
    "build_engine",
    "plan_job",
    "warmup_job",
]


def build_engine(config: EngineConfig) -> Engine:
    """The engine `config.engine` names: the diffusers engine, imported here so that unit tests
    never pay for torch/diffusers, or the simulated one, which never imports them."""
    if config.engine == "simulated":
        from consumer.generation.engine.simulated import SimulatedEngine

        return SimulatedEngine(config)
    from consumer.generation.engine.diffusers_engine import DiffusersEngine

    return DiffusersEngine(config)
