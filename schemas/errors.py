"""The small error vocabulary of the contract: stable codes that clients can switch on."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class ErrorCode(StrEnum):
    # The event could not be used at all (rejected result, or dead letter without a request_id).
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_REQUEST = "invalid_request"
    MODEL_NOT_ALLOWED = "model_not_allowed"
    # The request was valid but its processing failed.
    MODEL_UNAVAILABLE = "model_unavailable"
    TIMEOUT = "timeout"
    GENERATION_FAILED = "generation_failed"
    STORAGE_FAILED = "storage_failed"


class ViolationCode(StrEnum):
    """One rule broken by one field of a request."""

    MISSING_FIELD = "missing_field"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_TYPE = "invalid_type"
    INVALID_REQUEST_ID = "invalid_request_id"
    PROMPT_EMPTY = "prompt_empty"
    PROMPT_TOO_LONG = "prompt_too_long"
    SIZE_NOT_MULTIPLE_OF_8 = "size_not_multiple_of_8"
    SIZE_OUT_OF_RANGE = "size_out_of_range"
    STEPS_OUT_OF_RANGE = "steps_out_of_range"
    CFG_OUT_OF_RANGE = "cfg_out_of_range"
    NOT_FINITE = "not_finite"
    NUM_IMAGES_OUT_OF_RANGE = "num_images_out_of_range"
    SEED_OUT_OF_RANGE = "seed_out_of_range"
    MODEL_NOT_ALLOWED = "model_not_allowed"


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: str = Field(description="Dotted path of the offending field, e.g. params.width.")
    code: ViolationCode
    message: str


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str
    violations: list[Violation] = Field(default_factory=list)
