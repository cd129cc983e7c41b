"""The request event (contract 1.2): its id, prompts, params (schemas/params.py), and the 1.1
fields `schema_version` and `deadline`; the contract's version rule.

Everything 1.1 and 1.2 added is optional: a version-1 request validates exactly as before.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from schemas.errors import MAX_FIELD_CHARS, ViolationCode, clip, violation
from schemas.params import GenerationParams, limits_of, unicode_text
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
CONTRACT_VERSION = "1.2"
SUPPORTED_MAJOR_VERSION = 1
SCHEMA_VERSION_PATTERN = r"^[0-9]{1,4}(\.[0-9]{1,4})?$"
_SCHEMA_VERSION = re.compile(SCHEMA_VERSION_PATTERN)


def major_version(schema_version: str) -> int | None:
    """The major version of a well-formed `schema_version` ("1", "1.1"), else None."""
    if not _SCHEMA_VERSION.fullmatch(schema_version):
        return None
    return int(schema_version.partition(".")[0])


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
            'Contract version the producer wrote, "1", "1.1" or "1.2" (1.1); absent means 1. '
            "A major version other than 1 is rejected with unsupported_version."
        ),
        json_schema_extra={"pattern": SCHEMA_VERSION_PATTERN},
    )
    deadline: datetime | None = Field(
        None,
        description=(
            "RFC 3339 timestamp with a zone offset (1.1): a request whose generation has not "
            "ended by then is answered `expired` (deadline_exceeded), stopped at the next "
            "denoising step and never stored; one whose images were generated in time but "
            "stored or published after it is answered `completed` with `late: true`. A request "
            "already answered stays answered: a deadline passing later changes nothing."
        ),
    )

    @field_validator("prompt", "negative_prompt", mode="before")
    @classmethod
    def _check_text(cls, value: object, info: ValidationInfo) -> object:
        return unicode_text(value, str(info.field_name))

    @field_validator("prompt", mode="after")
    @classmethod
    def _check_prompt(cls, value: str, info: ValidationInfo) -> str:
        limits = limits_of(info)
        trimmed = value.strip()
        if not trimmed:
            raise violation(ViolationCode.PROMPT_EMPTY, "prompt must not be empty")
        if len(trimmed) > limits.max_prompt_length:
            raise violation(
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
        limits = limits_of(info)
        if len(value) > limits.max_prompt_length:
            raise violation(
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
            raise violation(
                ViolationCode.INVALID_SCHEMA_VERSION,
                'schema_version must look like "1" or "1.1", got {value}',
                value=clip(value, MAX_FIELD_CHARS),
            )
        if major != SUPPORTED_MAJOR_VERSION:
            raise violation(
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
    return violation(ViolationCode.INVALID_DEADLINE, message)
