"""The request event (contract 1.1) and the pure function that turns raw bytes into one.

Configurable limits travel in the validation context (`RequestLimits`), so the same models also
produce a static JSON Schema with the absolute bounds. Everything 1.1 added is optional: a
version-1 request validates exactly as before.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from schemas.cost import request_cost
from schemas.errors import MAX_FIELD_CHARS, ViolationCode, clip, has_lone_surrogate
from schemas.limits import ABSOLUTE_MAX_IMAGE_SIZE, MAX_SEED, SIZE_MULTIPLE, RequestLimits
from schemas.times import NaiveTimestampError, parse_rfc3339

# Starts with a letter or digit, so "." and ".." (path segments) can never be an id.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"

RequestId = Annotated[
    str,
    Field(
        pattern=REQUEST_ID_PATTERN,
        description=(
            "1-128 chars of [A-Za-z0-9._:-], starting with a letter or digit; the idempotency key."
        ),
    ),
]


# The contract's version: a request may declare the one it was written for in `schema_version`.
# Minor versions only add optional fields, so any 1.x is read; another major version is refused.
CONTRACT_VERSION = "1.1"
SUPPORTED_MAJOR_VERSION = 1
SCHEMA_VERSION_PATTERN = r"^[0-9]{1,4}(\.[0-9]{1,4})?$"
_SCHEMA_VERSION = re.compile(SCHEMA_VERSION_PATTERN)

OutputFormat = Literal["png", "jpeg", "webp"]
LOSSY_FORMATS: frozenset[str] = frozenset({"jpeg", "webp"})
# The quality of a lossy format when the request names none: visually clean for photographs,
# about a tenth of a level-1 PNG's size (BENCHMARKS.md, "Output formats").
DEFAULT_QUALITY = 90


def major_version(schema_version: str) -> int | None:
    """The major version of a well-formed `schema_version` ("1", "1.1"), else None."""
    if not _SCHEMA_VERSION.fullmatch(schema_version):
        return None
    return int(schema_version.partition(".")[0])


def _limits(info: ValidationInfo) -> RequestLimits:
    context = info.context if isinstance(info.context, dict) else {}
    limits = context.get("limits")
    return limits if isinstance(limits, RequestLimits) else RequestLimits()


def _violation(code: ViolationCode, message: str, **ctx: object) -> PydanticCustomError:
    return PydanticCustomError(code.value, message, dict(ctx) or None)


def _unicode_text(value: object, field: str) -> object:
    """Refuses a str that UTF-8 cannot encode: the engine, the PNG metadata and the result all
    need to encode it. Other types are left to the field's own type check."""
    if isinstance(value, str) and has_lone_surrogate(value):
        raise _violation(
            ViolationCode.INVALID_TYPE,
            "{field} must be valid Unicode text, without lone surrogates",
            field=field,
        )
    return value


class GenerationParams(BaseModel):
    """Generation parameters; defaults fit sdxl-turbo (512x512, 1 step, cfg 0)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    width: int = Field(512, multiple_of=SIZE_MULTIPLE, le=ABSOLUTE_MAX_IMAGE_SIZE)
    height: int = Field(512, multiple_of=SIZE_MULTIPLE, le=ABSOLUTE_MAX_IMAGE_SIZE)
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

    @field_validator("width", "height", mode="after")
    @classmethod
    def _check_size(cls, value: int, info: ValidationInfo) -> int:
        limits = _limits(info)
        if value % SIZE_MULTIPLE:
            raise _violation(
                ViolationCode.SIZE_NOT_MULTIPLE_OF_8,
                "params.{field} must be a multiple of 8, got {value}",
                field=info.field_name,
                value=value,
            )
        if not limits.min_image_size <= value <= limits.max_image_size:
            raise _violation(
                ViolationCode.SIZE_OUT_OF_RANGE,
                "params.{field} must be between {lo} and {hi}, got {value}",
                field=info.field_name,
                lo=limits.min_image_size,
                hi=limits.max_image_size,
                value=value,
            )
        return value

    @field_validator("steps", mode="after")
    @classmethod
    def _check_steps(cls, value: int, info: ValidationInfo) -> int:
        limits = _limits(info)
        if not limits.min_steps <= value <= limits.max_steps:
            raise _violation(
                ViolationCode.STEPS_OUT_OF_RANGE,
                "params.steps must be between {lo} and {hi}, got {value}",
                lo=limits.min_steps,
                hi=limits.max_steps,
                value=value,
            )
        return value

    @field_validator("cfg", mode="after")
    @classmethod
    def _check_cfg(cls, value: float, info: ValidationInfo) -> float:
        limits = _limits(info)
        if not math.isfinite(value):
            raise _violation(ViolationCode.NOT_FINITE, "params.cfg must be a finite number")
        if not 0.0 <= value <= limits.max_cfg:
            raise _violation(
                ViolationCode.CFG_OUT_OF_RANGE,
                "params.cfg must be between 0 and {hi}, got {value}",
                hi=limits.max_cfg,
                value=value,
            )
        return value

    @field_validator("num_images", mode="after")
    @classmethod
    def _check_num_images(cls, value: int, info: ValidationInfo) -> int:
        limits = _limits(info)
        if not 1 <= value <= limits.max_num_images:
            raise _violation(
                ViolationCode.NUM_IMAGES_OUT_OF_RANGE,
                "params.num_images must be between 1 and {hi}, got {value}",
                hi=limits.max_num_images,
                value=value,
            )
        return value

    @field_validator("model", mode="before")
    @classmethod
    def _check_model_text(cls, value: object) -> object:
        return _unicode_text(value, "params.model")

    @field_validator("model", mode="after")
    @classmethod
    def _check_model(cls, value: str | None, info: ValidationInfo) -> str:
        limits = _limits(info)
        model = limits.default_model if value is None else value
        if model not in limits.allowed_models:
            # The allowlist stays private: GET /v1/models is where an operator publishes it.
            raise _violation(
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
            raise _violation(
                ViolationCode.QUALITY_NOT_APPLICABLE,
                "params.quality applies to jpeg and webp only; png is lossless",
            )
        return value

    @model_validator(mode="after")
    def _check_cost(self, info: ValidationInfo) -> GenerationParams:
        """Runs only once every field is valid: the budget of schemas/cost.py."""
        budget = _limits(info).max_request_cost
        if budget and self.cost > budget:
            raise _violation(
                ViolationCode.TOO_EXPENSIVE,
                "params: the request costs {cost} units, over this worker's budget of {budget}"
                " (fewer images, steps or pixels, or cfg <= 1)",
                cost=f"{self.cost:g}",
                budget=f"{budget:g}",
            )
        return self

    @property
    def cost(self) -> float:
        return request_cost(self.width, self.height, self.steps, self.num_images, self.cfg)

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


class GenerationRequest(BaseModel):
    """A request event on `generation.requests` (key = request_id)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    request_id: RequestId
    prompt: str = Field(min_length=1, description="Non-empty after trimming; length-capped.")
    negative_prompt: str | None = Field(
        None, description="Absent or null: the worker's safe default negative prompt."
    )
    # Validated even when absent, so that the default model comes from the worker's limits.
    params: GenerationParams = Field(default_factory=dict, validate_default=True)
    schema_version: str | None = Field(
        None,
        description=(
            'Contract version the producer wrote, "1" or "1.1" (1.1); absent means 1. '
            "A major version other than 1 is rejected with unsupported_version."
        ),
        json_schema_extra={"pattern": SCHEMA_VERSION_PATTERN},
    )
    deadline: datetime | None = Field(
        None,
        description=(
            "RFC 3339 timestamp with a zone offset (1.1): a request not done by then is answered "
            "`expired` (deadline_exceeded) instead of being generated or published late."
        ),
    )

    @field_validator("prompt", "negative_prompt", mode="before")
    @classmethod
    def _check_text(cls, value: object, info: ValidationInfo) -> object:
        return _unicode_text(value, str(info.field_name))

    @field_validator("prompt", mode="after")
    @classmethod
    def _check_prompt(cls, value: str, info: ValidationInfo) -> str:
        limits = _limits(info)
        trimmed = value.strip()
        if not trimmed:
            raise _violation(ViolationCode.PROMPT_EMPTY, "prompt must not be empty")
        if len(trimmed) > limits.max_prompt_length:
            raise _violation(
                ViolationCode.PROMPT_TOO_LONG,
                "prompt must be at most {hi} characters, got {value}",
                hi=limits.max_prompt_length,
                value=len(trimmed),
            )
        return trimmed

    @field_validator("negative_prompt", mode="after")
    @classmethod
    def _check_negative(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        limits = _limits(info)
        if len(value) > limits.max_prompt_length:
            raise _violation(
                ViolationCode.PROMPT_TOO_LONG,
                "negative_prompt must be at most {hi} characters, got {value}",
                hi=limits.max_prompt_length,
                value=len(value),
            )
        return value.strip() or None

    @field_validator("schema_version", mode="after")
    @classmethod
    def _check_schema_version(cls, value: str | None) -> str | None:
        if value is None:
            return None
        major = major_version(value)
        if major is None:
            raise _violation(
                ViolationCode.INVALID_SCHEMA_VERSION,
                'schema_version must look like "1" or "1.1", got {value}',
                value=clip(value, MAX_FIELD_CHARS),
            )
        if major != SUPPORTED_MAJOR_VERSION:
            raise _violation(
                ViolationCode.UNSUPPORTED_VERSION,
                "schema_version {value} is not supported: this worker reads major version {major}",
                value=clip(value, MAX_FIELD_CHARS),
                major=SUPPORTED_MAJOR_VERSION,
            )
        return value

    @field_validator("deadline", mode="before")
    @classmethod
    def _parse_deadline(cls, value: object) -> object:
        """Strict mode takes no text for a datetime: RFC 3339 is parsed here, more strictly than
        pydantic's lax ISO 8601 would (no dates alone, no week dates, no naive times)."""
        if isinstance(value, str):
            try:
                return parse_rfc3339(value)
            except NaiveTimestampError:
                raise _deadline_violation(
                    "deadline must carry a zone offset (Z or +hh:mm)"
                ) from None
            except ValueError:
                raise _deadline_violation(
                    "deadline must be an RFC 3339 timestamp such as 2026-05-01T12:00:00Z"
                ) from None
        if isinstance(value, datetime) and value.tzinfo is None:
            raise _deadline_violation("deadline must carry a zone offset (Z or +hh:mm)")
        return value  # anything else is refused as invalid_type by the datetime check

    def seconds_left(self, now: datetime) -> float | None:
        """Seconds until the deadline (negative once passed), or None without a deadline.
        `now` must be aware: datetime.now(UTC)."""
        return None if self.deadline is None else (self.deadline - now).total_seconds()

    def deadline_passed(self, now: datetime) -> bool:
        """Whether the request has a deadline and `now` (aware) is at or past it."""
        left = self.seconds_left(now)
        return left is not None and left <= 0


def _deadline_violation(message: str) -> PydanticCustomError:
    return _violation(ViolationCode.INVALID_DEADLINE, message)
