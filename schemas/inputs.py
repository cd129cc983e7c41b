"""Contract 1.2 request inputs: an init image for image-to-image and LoRA adapters, and the rules
they follow (pure functions over the validated values, so they are tested directly).

- `params.init_image: {"key": ...}` names an object in the worker's own bucket under
  INPUT_PREFIX: never a URL, so a producer cannot make the worker fetch an address it names.
- `params.strength` in (0, 1] (default 0.5) and only with an init image; `steps x strength >= 1`
  (the pipeline runs int(steps x strength) denoising steps, and none would leave the input as is).
- `params.loras: [{"name", "scale"}]`: at most MAX_LORAS_PER_REQUEST, each named once, each in
  ALLOWED_LORAS, scale in [-2, 2].
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import MAX_FIELD_CHARS, ViolationCode, clip, violation
from schemas.limits import RequestLimits

DEFAULT_STRENGTH = 0.5
MAX_LORA_SCALE = 2.0
MAX_INPUT_KEY_CHARS = 1024  # S3's own limit on a key


class InitImageRef(BaseModel):
    """Where the init image is: an object key in the worker's bucket (1.2)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    key: str = Field(
        min_length=1,
        max_length=MAX_INPUT_KEY_CHARS,
        description=(
            "Object key under the worker's INPUT_PREFIX (default inputs/), in its own bucket: "
            "a PNG, JPEG or WebP image of at most MAX_INPUT_IMAGE_BYTES and 2048 x 2048 pixels."
        ),
    )


class LoraRef(BaseModel):
    """One LoRA adapter applied to a request (1.2)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    name: str = Field(min_length=1, description="Must be in the worker's ALLOWED_LORAS.")
    scale: float = Field(
        1.0, description=f"Weight of the adapter, -{MAX_LORA_SCALE:g}..{MAX_LORA_SCALE:g}."
    )


def check_init_image_key(key: str, limits: RequestLimits) -> None:
    """Raises `init_image_not_allowed` for a key outside INPUT_PREFIX, or one that climbs out of
    it (`..` segments, which some stores and proxies resolve)."""
    inside = key.startswith(limits.input_prefix) and ".." not in key.split("/")
    if not inside or key == limits.input_prefix:
        raise violation(
            ViolationCode.INIT_IMAGE_NOT_ALLOWED,
            "params.init_image.key '{key}' is outside this worker's input prefix",
            key=clip(key, MAX_FIELD_CHARS),
        )


def check_strength_range(strength: float) -> None:
    """In (0, 1]."""
    if not (math.isfinite(strength) and 0 < strength <= 1):
        raise violation(
            ViolationCode.STRENGTH_OUT_OF_RANGE,
            "params.strength must be greater than 0 and at most 1, got {value}",
            value=strength,
        )


def check_strength_use(strength: float | None, has_init_image: bool, steps: int) -> None:
    """Only with an init image (never silently ignored), and steps x strength >= 1 (the
    default strength counts when none is given)."""
    if not has_init_image:
        if strength is not None:
            raise violation(
                ViolationCode.STRENGTH_WITHOUT_INIT_IMAGE,
                "params.strength applies to image-to-image only: give params.init_image",
            )
        return
    strength = DEFAULT_STRENGTH if strength is None else strength
    if effective_steps(steps, strength) < 1:
        raise violation(
            ViolationCode.TOO_FEW_STEPS_FOR_STRENGTH,
            "params.steps x params.strength must be at least 1 ({steps} x {strength} is not):"
            " more steps or a higher strength",
            steps=steps,
            strength=strength,
        )


def effective_steps(steps: int, strength: float) -> int:
    """The denoising steps an image-to-image call runs (diffusers: int(steps x strength))."""
    return int(steps * strength)


def check_loras(loras: Sequence[LoraRef], limits: RequestLimits) -> None:
    """At most MAX_LORAS_PER_REQUEST, each named once, each scale in range, each allowed (the
    allowlist checked last: a request that breaks only it is `lora_not_allowed`)."""
    if len(loras) > limits.max_loras_per_request:
        raise violation(
            ViolationCode.TOO_MANY_LORAS,
            "params.loras may name at most {hi} adapters, got {value}",
            hi=limits.max_loras_per_request,
            value=len(loras),
        )
    names = [lora.name for lora in loras]
    if len(set(names)) < len(names):
        raise violation(ViolationCode.DUPLICATE_LORA, "params.loras names an adapter twice")
    for lora in loras:
        if not (math.isfinite(lora.scale) and -MAX_LORA_SCALE <= lora.scale <= MAX_LORA_SCALE):
            raise violation(
                ViolationCode.LORA_SCALE_OUT_OF_RANGE,
                "params.loras scale must be between {lo} and {hi}, got {value}",
                lo=-MAX_LORA_SCALE,
                hi=MAX_LORA_SCALE,
                value=lora.scale,
            )
    for lora in loras:
        if lora.name not in limits.allowed_loras:
            raise violation(
                ViolationCode.LORA_NOT_ALLOWED,
                "params.loras adapter '{name}' is not allowed on this worker",
                name=clip(lora.name, MAX_FIELD_CHARS),
            )
