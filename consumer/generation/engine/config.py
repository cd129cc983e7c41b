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
CpuOffload = Literal["none", "model", "sequential"]
# Attention slicing: None = off, "auto" = half the heads per slice, or a number of heads per slice.
AttentionSlicing = Literal["auto"] | int | None


@dataclass(frozen=True)
class LoraSource:
    """Where a LoRA adapter's weights are: a local folder, a hub id (at `revision`, or the
    main branch), or TINY_LORA_ID, the adapter built for tiny-sdxl."""

    source: str
    revision: str | None = None


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
    # Memory savers for small GPUs (loading.py): the pipeline offloaded to the CPU between uses
    # (needs an accelerator), the VAE decoding one image or one tile at a time, sliced attention.
    cpu_offload: CpuOffload = "none"
    vae_slicing: bool = False
    vae_tiling: bool = False
    attention_slicing: AttentionSlicing = None
    simulated_step_ms: float = 50.0  # simulated engine: the time of one denoising step
    simulated_load_ms: float = 1000.0  # simulated engine: the time of one model load
    # Hub model id -> the revision to load (MODEL_REVISIONS); others load the main branch.
    model_revisions: Mapping[str, str] = field(default_factory=dict)
    # Contract 1.2: LoRA adapters by name (ALLOWED_LORAS, with LORA_REVISIONS), and how many
    # stay loaded in each pipeline (MAX_LORAS_CACHE).
    loras: Mapping[str, LoraSource] = field(default_factory=dict)
    max_loras: int = 4

    def __post_init__(self) -> None:
        if self.max_models < 1:
            raise ValueError("max_models must be at least 1")
        if self.max_cache_bytes < 0 or self.model_retry_seconds < 0:
            raise ValueError("max_cache_bytes and model_retry_seconds must not be negative")
        if self.simulated_step_ms < 0 or self.simulated_load_ms < 0:
            raise ValueError("simulated_step_ms and simulated_load_ms must not be negative")
        if self.cpu_offload not in ("none", "model", "sequential"):
            raise ValueError(f"cpu_offload must be none, model or sequential: {self.cpu_offload}")
        if self.cpu_offload != "none" and self.device == "cpu":
            raise ValueError(cpu_offload_refusal(self.cpu_offload, "cpu"))
        if isinstance(self.attention_slicing, int) and self.attention_slicing < 1:
            raise ValueError("attention_slicing must be 'auto', None or a slice size of at least 1")


def cpu_offload_refusal(mode: str, device: str) -> str:
    """Why CPU_OFFLOAD cannot apply on this device: it moves models between the CPU and an
    accelerator, and there is none."""
    return (
        f"CPU_OFFLOAD={mode} needs an accelerator (DEVICE=cuda) but the engine runs on {device}: "
        "set CPU_OFFLOAD=none"
    )
