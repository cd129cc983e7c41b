"""What the engines need to know, and nothing else: built once by `Settings.engine_config()`.

Kept apart from the worker's settings so that an engine can be built (tests, benchmarks, the
one-shot command) without a broker, a store or an environment to read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

EngineKind = Literal["diffusers", "simulated"]


@dataclass(frozen=True)
class EngineConfig:
    models_dir: Path  # the built tiny model lives here
    engine: EngineKind = "diffusers"  # simulated: no model, no torch (simulated.py)
    device: str = "auto"  # auto, cuda, cpu, mps
    torch_threads: int = 0  # 0 = torch's default
    torch_compile: bool = False  # CUDA only
    fp16_vae: str | None = None  # CUDA only: an fp16-safe VAE id or folder
    offline: bool = False  # never contact the hub
    hub_probe_timeout_seconds: float = 2.0
    max_models: int = 1  # pipelines kept loaded (LRU)
    max_cache_bytes: int = 0  # memory budget of the loaded pipelines; 0 = count only
    model_retry_seconds: float = 60.0  # a failed load is not tried again for this long
    simulated_step_ms: float = 50.0  # simulated engine: the time of one denoising step
    simulated_load_ms: float = 1000.0  # simulated engine: the time of one model load
    # Hub model id -> the revision to load (MODEL_REVISIONS); others load the main branch.
    model_revisions: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_models < 1:
            raise ValueError("max_models must be at least 1")
        if self.max_cache_bytes < 0 or self.model_retry_seconds < 0:
            raise ValueError("max_cache_bytes and model_retry_seconds must not be negative")
        if self.simulated_step_ms < 0 or self.simulated_load_ms < 0:
            raise ValueError("simulated_step_ms and simulated_load_ms must not be negative")
