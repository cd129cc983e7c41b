"""The small error vocabulary of the contract: stable codes that clients can switch on."""

from __future__ import annotations

import re
from enum import StrEnum
from functools import partial
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError


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
    # The event is larger than MAX_EVENT_BYTES: dead-lettered without being parsed.
    EVENT_TOO_LARGE = "event_too_large"
    # Something in the worker broke while handling the request (a bug, MemoryError, ...).
    INTERNAL_ERROR = "internal_error"
    # The broker refused the full result record for good (too large, invalid): this minimal
    # result replaces it.
    RESULT_REFUSED = "result_refused"
    # The request did not fit in memory, even alone (after splitting its batch).
    OUT_OF_MEMORY = "out_of_memory"
    # The request was started MAX_ATTEMPTS times by workers that died meanwhile (a poison event).
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    # Contract 1.1. The request declares a schema_version whose major version is not 1.
    UNSUPPORTED_VERSION = "unsupported_version"
    # The request's deadline passed before its images could be delivered (status `expired`).
    DEADLINE_EXCEEDED = "deadline_exceeded"
    # A cancel command for the request arrived on the control topic (status `cancelled`).
    CANCELLED = "cancelled"
    # The request_id was used before with other generation parameters (status `rejected`): an
    # idempotency key reused for another request is refused, never answered by an overwrite.
    REQUEST_ID_CONFLICT = "request_id_conflict"
    # Contract 1.2, image-to-image (status `rejected`): the init image's key is outside
    # INPUT_PREFIX (found by validation), or the object there is missing, not PNG/JPEG/WebP,
    # over MAX_INPUT_IMAGE_BYTES or 2048 x 2048 pixels, or cannot be decoded (found when read).
    INIT_IMAGE_NOT_ALLOWED = "init_image_not_allowed"
    INIT_IMAGE_NOT_FOUND = "init_image_not_found"
    INIT_IMAGE_UNSUPPORTED_FORMAT = "init_image_unsupported_format"
    INIT_IMAGE_TOO_LARGE = "init_image_too_large"
    INIT_IMAGE_UNDECODABLE = "init_image_undecodable"
    # Contract 1.2, LoRA adapters: one is not in ALLOWED_LORAS (`rejected`), or it is but cannot
    # be loaded (`failed`).
    LORA_NOT_ALLOWED = "lora_not_allowed"
    LORA_UNAVAILABLE = "lora_unavailable"


# The public text of each code: short and fixed. Results never carry exception text, paths, the
# bucket or the allowlist; the detail goes to the worker's log next to the request_id.
PUBLIC_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.INVALID_JSON: "the event is not UTF-8 JSON",
    ErrorCode.NOT_AN_OBJECT: "the event must be a JSON object",
    ErrorCode.INVALID_REQUEST: "the request breaks the contract; see violations",
    ErrorCode.MODEL_NOT_ALLOWED: "the requested model is not allowed on this worker",
    ErrorCode.MODEL_UNAVAILABLE: "the model is allowed but cannot be loaded on this worker",
    ErrorCode.TIMEOUT: "the generation exceeded the worker's time limit",
    ErrorCode.GENERATION_FAILED: "the generation failed",
    ErrorCode.STORAGE_FAILED: "the image could not be stored",
    ErrorCode.EVENT_TOO_LARGE: "the event is larger than the worker accepts",
    ErrorCode.INTERNAL_ERROR: "the worker failed while handling the request",
    ErrorCode.RESULT_REFUSED: "the broker refused the full result; this minimal result replaces it",
    ErrorCode.OUT_OF_MEMORY: "the request does not fit in the worker's memory",
    ErrorCode.ATTEMPTS_EXHAUSTED: "workers died while running this request; it is not tried again",
    ErrorCode.UNSUPPORTED_VERSION: "the request's schema_version is not supported by this worker",
    ErrorCode.DEADLINE_EXCEEDED: "the request's deadline passed before it was completed",
    ErrorCode.CANCELLED: "the request was cancelled",
    ErrorCode.REQUEST_ID_CONFLICT: (
        "the request_id was already used with other parameters; use a new request_id"
    ),
    ErrorCode.INIT_IMAGE_NOT_ALLOWED: "params.init_image.key is outside the worker's input prefix",
    ErrorCode.INIT_IMAGE_NOT_FOUND: "the init image does not exist in the worker's store",
    ErrorCode.INIT_IMAGE_UNSUPPORTED_FORMAT: "the init image is not a PNG, JPEG or WebP image",
    ErrorCode.INIT_IMAGE_TOO_LARGE: "the init image is larger than the worker accepts",
    ErrorCode.INIT_IMAGE_UNDECODABLE: "the init image cannot be decoded",
    ErrorCode.LORA_NOT_ALLOWED: "a requested LoRA adapter is not allowed on this worker",
    ErrorCode.LORA_UNAVAILABLE: "a LoRA adapter is allowed but cannot be loaded on this worker",
}

# Codes a request that cannot be completed is answered `rejected` with (GenerationResult.failed).
REJECTED_CODES: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.REQUEST_ID_CONFLICT,
        ErrorCode.INIT_IMAGE_NOT_ALLOWED,
        ErrorCode.INIT_IMAGE_NOT_FOUND,
        ErrorCode.INIT_IMAGE_UNSUPPORTED_FORMAT,
        ErrorCode.INIT_IMAGE_TOO_LARGE,
        ErrorCode.INIT_IMAGE_UNDECODABLE,
        ErrorCode.LORA_NOT_ALLOWED,
    }
)


# Caps on what one rejected result can carry: an event with thousands of unknown keys must not
# produce a result larger than the broker accepts (about 1 MiB on a stock broker).
MAX_VIOLATIONS = 20
# A violation's field path, and any user value a message echoes (a model name), in characters.
MAX_FIELD_CHARS = 64
MAX_VIOLATION_MESSAGE_CHARS = 200
MAX_MESSAGE_CHARS = 1000
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters with an ellipsis, lone surrogates replaced by U+FFFD.

    json.loads turns a lone `\\ud800` escape into a str that cannot be encoded as UTF-8, so
    echoing it unchanged would make the whole result unserialisable.
    """
    if len(text) > limit:
        text = text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return text if text.isascii() else _LONE_SURROGATE.sub("\N{REPLACEMENT CHARACTER}", text)


def has_lone_surrogate(text: str) -> bool:
    """json.loads keeps a pair of surrogate escapes as one character: any left is a lone one."""
    return not text.isascii() and _LONE_SURROGATE.search(text) is not None


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
    TOO_EXPENSIVE = "too_expensive"
    # Contract 1.1.
    INVALID_DEADLINE = "invalid_deadline"
    INVALID_SCHEMA_VERSION = "invalid_schema_version"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNSUPPORTED_FORMAT = "unsupported_format"
    QUALITY_OUT_OF_RANGE = "quality_out_of_range"
    QUALITY_NOT_APPLICABLE = "quality_not_applicable"
    # Contract 1.2.
    INIT_IMAGE_NOT_ALLOWED = "init_image_not_allowed"
    STRENGTH_OUT_OF_RANGE = "strength_out_of_range"
    STRENGTH_WITHOUT_INIT_IMAGE = "strength_without_init_image"
    TOO_FEW_STEPS_FOR_STRENGTH = "too_few_steps_for_strength"
    TOO_MANY_LORAS = "too_many_loras"
    DUPLICATE_LORA = "duplicate_lora"
    LORA_NOT_ALLOWED = "lora_not_allowed"
    LORA_SCALE_OUT_OF_RANGE = "lora_scale_out_of_range"


# A request whose violations all have one of these codes gets that error code instead of
# `invalid_request`: the request is well formed, only not admitted on this worker.
SOLE_VIOLATION_CODES: dict[ViolationCode, ErrorCode] = {
    ViolationCode.MODEL_NOT_ALLOWED: ErrorCode.MODEL_NOT_ALLOWED,
    ViolationCode.INIT_IMAGE_NOT_ALLOWED: ErrorCode.INIT_IMAGE_NOT_ALLOWED,
    ViolationCode.LORA_NOT_ALLOWED: ErrorCode.LORA_NOT_ALLOWED,
}


def _clipped(limit: int) -> AfterValidator:
    """Texts are cut, not refused: building an error must never fail on the user's input."""
    return AfterValidator(partial(clip, limit=limit))


FieldPath = Annotated[
    str, _clipped(MAX_FIELD_CHARS), Field(json_schema_extra={"maxLength": MAX_FIELD_CHARS})
]
ViolationMessage = Annotated[
    str,
    _clipped(MAX_VIOLATION_MESSAGE_CHARS),
    Field(json_schema_extra={"maxLength": MAX_VIOLATION_MESSAGE_CHARS}),
]
ErrorMessage = Annotated[
    str, _clipped(MAX_MESSAGE_CHARS), Field(json_schema_extra={"maxLength": MAX_MESSAGE_CHARS})
]


class Violation(BaseModel):
    model_config = ConfigDict(frozen=True)

    field: FieldPath = Field(description="Dotted path of the offending field, e.g. params.width.")
    code: ViolationCode
    message: ViolationMessage


class ErrorInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: ErrorMessage
    violations: list[Violation] = Field(
        default_factory=list,
        description=f"The first {MAX_VIOLATIONS} broken rules at most.",
        json_schema_extra={"maxItems": MAX_VIOLATIONS},
    )
    omitted_violations: int = Field(
        0, ge=0, description="How many more broken rules the request had than `violations` lists."
    )

    @classmethod
    def from_violations(cls, violations: list[Violation], omitted: int = 0) -> ErrorInfo:
        """The first MAX_VIOLATIONS violations; `omitted` counts those the caller never built."""
        kept = violations[:MAX_VIOLATIONS]
        codes = {v.code for v in violations}
        sole = SOLE_VIOLATION_CODES.get(next(iter(codes))) if len(codes) == 1 else None
        top = sole if sole is not None and not omitted else ErrorCode.INVALID_REQUEST
        return cls(
            code=top,
            message="; ".join(v.message for v in kept),
            violations=kept,
            omitted_violations=omitted + len(violations) - len(kept),
        )

    @classmethod
    def public(cls, code: ErrorCode) -> ErrorInfo:
        """The error with its fixed public message."""
        return cls(code=code, message=PUBLIC_MESSAGES[code])


def violation(code: ViolationCode, message: str, **ctx: object) -> PydanticCustomError:
    """A validation error carrying its violation code (how the validator reports a rule)."""
    return PydanticCustomError(code.value, message, dict(ctx) or None)
