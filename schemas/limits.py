"""Limits the request validator enforces; built from the settings at startup."""

from __future__ import annotations

from dataclasses import dataclass

ABSOLUTE_MAX_IMAGE_SIZE = 2048
SIZE_MULTIPLE = 8
MAX_SEED = 2**63 - 1
DEFAULT_INPUT_PREFIX = "inputs/"


@dataclass(frozen=True)
class RequestLimits:
    allowed_models: tuple[str, ...] = ("stabilityai/sdxl-turbo",)
    default_model: str = "stabilityai/sdxl-turbo"
    max_prompt_length: int = 2000
    min_image_size: int = 64
    max_image_size: int = ABSOLUTE_MAX_IMAGE_SIZE
    min_steps: int = 1
    max_steps: int = 50
    max_cfg: float = 20.0
    max_num_images: int = 4
    # Larger events are dead-lettered before decoding: parsing one costs time on the event loop.
    max_event_bytes: int = 1024 * 1024
    # In units of the default request (schemas/cost.py); 0 = no budget.
    max_request_cost: float = 500.0
    # Contract 1.2: where init images may be read from, and the LoRA adapters a request may name.
    input_prefix: str = DEFAULT_INPUT_PREFIX
    allowed_loras: tuple[str, ...] = ()
    max_loras_per_request: int = 2
