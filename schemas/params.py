"""The `params` object of a request (contract 1.2): size, steps, guidance, seed, model, the
output format (1.1), an init image and LoRA adapters (1.2, schemas/inputs.py); the validation
helpers that the request model shares.

Configurable limits travel in the validation context (`RequestLimits`), so the same models also
produce a static JSON Schema with the absolute bounds.
"""

from __future__ import annotations

import math
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from schemas.cost import request_cost
from schemas.errors import MAX_FIELD_CHARS, ViolationCode, clip, has_lone_surrogate, violation
from schemas.inputs import (
    DEFAULT_STRENGTH,
    InitImageRef,
    LoraRef,
    check_init_image_key,
    check_loras,
    check_strength_range,
    check_strength_use,
)
from schemas.limits import ABSOLUTE_MAX_IMAGE_SIZE, MAX_SEED, SIZE_MULTIPLE, RequestLimits

OutputFormat = Literal["png", "jpeg", "webp"]
LOSSY_FORMATS: frozenset[str] = frozenset({"jpeg", "webp"})
# The quality of a lossy format when the request names none: visually clean for photographs,
# about a tenth of a level-1 PNG's size (BENCHMARKS.md, "Output formats").
DEFAULT_QUALITY = 90


def limits_of(info: ValidationInfo) -> RequestLimits:
    context = info.context if isinstance(info.context, dict) else {}
    limits = context.get("limits")
    return limits if isinstance(limits, RequestLimits) else RequestLimits()


def unicode_text(value: object, field: str) -> object:
    """Refuses a str that UTF-8 cannot encode: the engine, the PNG metadata and the result all
    need to encode it. Other types are left to the field's own type check."""
    if isinstance(value, str) and has_lone_surrogate(value):
        raise violation(
            ViolationCode.INVALID_TYPE,
            "{field} must be valid Unicode text, without lone surrogates",
            field=field,
        )
    return value


N = TypeVar("N", int, float)


def _in_range(value: N, lo: float, hi: float, code: ViolationCode, field: str) -> N:
    """`value`, or the violation `code` naming params.`field` and its bounds."""
    if not lo <= value <= hi:
        raise violation(
            code,
            "params.{field} must be between {lo} and {hi}, got {value}",
            field=field,
            lo=lo,
            hi=hi,
            value=value,
        )
    return value


class GenerationParams(BaseModel):
    """Generation parameters; defaults fit sdxl-turbo (512x512, 1 step, cfg 0)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    width: int = Field(
        512,
        multiple_of=SIZE_MULTIPLE,
        le=ABSOLUTE_MAX_IMAGE_SIZE,
        description="512 when absent; with an init image (1.2), the input's width.",
    )
    height: int = Field(
        512,
        multiple_of=SIZE_MULTIPLE,
        le=ABSOLUTE_MAX_IMAGE_SIZE,
        description="512 when absent; with an init image (1.2), the input's height.",
    )
    steps: int = Field(1, ge=1)
    cfg: float = Field(0.0, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seed of the first image.")
    num_images: int = Field(1, ge=1)
    model: str | None = Field(
        None,
        validate_default=True,
        description="Must be in ALLOWED_MODELS; the worker's DEFAULT_MODEL when absent.",
    )
    format: OutputFormat = Field("png", description="Encoding of the stored images (1.1).")
    quality: int | None = Field(
        None,
        ge=1,
        le=100,
        description=(
            f"jpeg and webp only (1.1): encoder quality, {DEFAULT_QUALITY} when absent. "
            "Refused with png, which is lossless."
        ),
    )
    # Contract 1.2.
    init_image: InitImageRef | None = Field(
        None, description="Image-to-image (1.2): the image to start from, in the worker's bucket."
    )
    strength: float | None = Field(
        None,
        description=(
            f"Image-to-image only (1.2): how far from the input, in (0, 1], {DEFAULT_STRENGTH} "
            "when absent; steps x strength must be at least 1."
        ),
    )
    loras: list[LoraRef] | None = Field(
        None, description="LoRA adapters (1.2), each in the worker's ALLOWED_LORAS."
    )

    @field_validator("width", "height", mode="after")
    @classmethod
    def _check_size(cls, value: int, info: ValidationInfo) -> int:
        limits = limits_of(info)
        if value % SIZE_MULTIPLE:
            raise violation(
                ViolationCode.SIZE_NOT_MULTIPLE_OF_8,
                "params.{field} must be a multiple of 8, got {value}",
                field=info.field_name,
                value=value,
            )
        field = info.field_name or "size"
        lo, hi = limits.min_image_size, limits.max_image_size
        return _in_range(value, lo, hi, ViolationCode.SIZE_OUT_OF_RANGE, field)

    @field_validator("steps", mode="after")
    @classmethod
    def _check_steps(cls, value: int, info: ValidationInfo) -> int:
        limits = limits_of(info)
        code = ViolationCode.STEPS_OUT_OF_RANGE
        return _in_range(value, limits.min_steps, limits.max_steps, code, "steps")

    @field_validator("cfg", mode="after")
    @classmethod
    def _check_cfg(cls, value: float, info: ValidationInfo) -> float:
        limits = limits_of(info)
        if not math.isfinite(value):
            raise violation(ViolationCode.NOT_FINITE, "params.cfg must be a finite number")
        return _in_range(value, 0, limits.max_cfg, ViolationCode.CFG_OUT_OF_RANGE, "cfg")

    @field_validator("num_images", mode="after")
    @classmethod
    def _check_num_images(cls, value: int, info: ValidationInfo) -> int:
        limits = limits_of(info)
        code = ViolationCode.NUM_IMAGES_OUT_OF_RANGE
        return _in_range(value, 1, limits.max_num_images, code, "num_images")

    @field_validator("model", mode="before")
    @classmethod
    def _check_model_text(cls, value: object) -> object:
        return unicode_text(value, "params.model")

    @field_validator("model", mode="after")
    @classmethod
    def _check_model(cls, value: str | None, info: ValidationInfo) -> str:
        limits = limits_of(info)
        model = limits.default_model if value is None else value
        if model not in limits.allowed_models:
            # The allowlist stays private: GET /v1/models is where an operator publishes it.
            raise violation(
                ViolationCode.MODEL_NOT_ALLOWED,
                "params.model '{model}' is not allowed on this worker",
                model=clip(model, MAX_FIELD_CHARS),
            )
        return model

    @field_validator("quality", mode="after")
    @classmethod
    def _check_quality(cls, value: int | None, info: ValidationInfo) -> int | None:
        # A quality that silently did nothing would let a producer believe it bought smaller
        # files; an invalid format is reported on its own and is absent from info.data.
        if value is not None and info.data.get("format") == "png":
            raise violation(
                ViolationCode.QUALITY_NOT_APPLICABLE,
                "params.quality applies to jpeg and webp only; png is lossless",
            )
        return value

    @field_validator("init_image", mode="after")
    @classmethod
    def _check_init_image(
        cls, value: InitImageRef | None, info: ValidationInfo
    ) -> InitImageRef | None:
        if value is not None:
            check_init_image_key(value.key, limits_of(info))
        return value

    @field_validator("strength", mode="after")
    @classmethod
    def _check_strength(cls, value: float | None) -> float | None:
        if value is not None:
            check_strength_range(value)
        return value

    @field_validator("loras", mode="after")
    @classmethod
    def _check_loras(
        cls, value: list[LoraRef] | None, info: ValidationInfo
    ) -> list[LoraRef] | None:
        if value is not None:
            check_loras(value, limits_of(info))
        return value

    @model_validator(mode="after")
    def _check_cost(self, info: ValidationInfo) -> GenerationParams:
        """Runs only once every field is valid: the strength's use (1.2), then the budget of
        schemas/cost.py."""
        check_strength_use(self.strength, self.init_image is not None, self.steps)
        budget = limits_of(info).max_request_cost
        if budget and self.cost > budget:
            raise violation(
                ViolationCode.TOO_EXPENSIVE,
                "params: the request costs {cost} units, over this worker's budget of {budget}"
                " (fewer images, steps or pixels, or cfg <= 1)",
                cost=f"{self.cost:g}",
                budget=f"{budget:g}",
            )
        return self

    @property
    def cost(self) -> float:
        """A size taken from an init image (1.2) counts as the largest one it may have."""
        width, height = self.requested_size
        return request_cost(
            width or ABSOLUTE_MAX_IMAGE_SIZE,
            height or ABSOLUTE_MAX_IMAGE_SIZE,
            self.steps,
            self.num_images,
            self.cfg,
        )

    @property
    def requested_size(self) -> tuple[int, int]:
        """(width, height), 0 for one an init image decides: not given with an init image."""
        sized = self.init_image is None
        return (
            self.width if sized or "width" in self.model_fields_set else 0,
            self.height if sized or "height" in self.model_fields_set else 0,
        )

    @property
    def strength_or_default(self) -> float | None:
        """The strength of an image-to-image request, None for text-to-image."""
        if self.init_image is None:
            return None
        return DEFAULT_STRENGTH if self.strength is None else self.strength

    @property
    def model_name(self) -> str:
        """The model to use; validation has already replaced an absent model by the default."""
        return self.model or RequestLimits().default_model

    @property
    def output_quality(self) -> int | None:
        """The encoder quality to use: None for png, else `quality` or DEFAULT_QUALITY."""
        if self.format not in LOSSY_FORMATS:
            return None
        return DEFAULT_QUALITY if self.quality is None else self.quality
