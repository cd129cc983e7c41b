"""Contract 1.2 settings: image-to-image inputs and LoRA adapters. Declared apart from the
other fields only to keep each module short; the configuration reference lists them after the
request limits."""

from __future__ import annotations

from typing import Annotated

from pydantic import ByteSize, Field
from pydantic_settings import BaseSettings, NoDecode

from schemas.limits import DEFAULT_INPUT_PREFIX


class InputFields(BaseSettings):
    # --- image inputs and adapters --------------------------------------------------------------
    input_prefix: str = Field(
        DEFAULT_INPUT_PREFIX,
        min_length=1,
        description=(
            "Image-to-image (1.2): a request's params.init_image.key must start with this; the "
            "object is read from the worker's own bucket (S3_BUCKET), never from a URL."
        ),
    )
    max_input_image_bytes: ByteSize = Field(
        ByteSize(10 * 1024 * 1024),
        gt=0,
        description=(
            "Largest init image, in bytes or with a unit (10MiB); larger ones are rejected with "
            "init_image_too_large, as are images over 2048 x 2048 pixels."
        ),
    )
    allowed_loras: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description=(
            "LoRA adapters requests may name (1.2): `name=source,name=source`, each source a "
            "local folder or a hub id holding diffusers-format safetensors weights "
            "(pytorch_lora_weights.safetensors); a bare `name` is a hub id used as its own "
            "name, and `tiny-lora` is the adapter built for tiny-sdxl (tests, demos)."
        ),
    )
    lora_revisions: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description=(
            "Hub adapters pinned to a revision: `name=revision,name=revision`, each name one of "
            "ALLOWED_LORAS; shown in /v1/models."
        ),
    )
    max_loras_per_request: int = Field(
        2, ge=0, description="Most LoRA adapters one request may name; 0 = none allowed."
    )
    max_loras_cache: int = Field(
        4,
        ge=1,
        description=(
            "LoRA adapters kept loaded in each pipeline (LRU; loaded on first use, never "
            "fused into the model's weights)."
        ),
    )
