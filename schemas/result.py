"""The result event (contract 1.1) published to `generation.results`, keyed by request_id."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.errors import (
    MAX_FIELD_CHARS,
    MAX_VIOLATION_MESSAGE_CHARS,
    MAX_VIOLATIONS,
    REJECTED_CODES,
    ErrorCode,
    ErrorInfo,
    clip,
)

# Far below a stock broker's 1 MiB record limit, and above any result the worker builds itself
# (at most MAX_VIOLATIONS capped violations, or MAX_NUM_IMAGES image references).
MAX_RESULT_BYTES = 64 * 1024
# REQUEST_ID_PATTERN's bound; only the minimal result has to enforce it.
_MAX_REQUEST_ID_CHARS = 128


class Status(StrEnum):
    COMPLETED = "completed"
    REJECTED = "rejected"  # invalid input; never retried
    TIMEOUT = "timeout"  # GENERATION_TIMEOUT_SECONDS elapsed
    FAILED = "failed"  # engine or storage error
    EXPIRED = "expired"  # 1.1: the request's deadline passed first (deadline_exceeded)
    CANCELLED = "cancelled"  # 1.1: a cancel command arrived first (cancelled)


# The status each error code of a failed request is answered with; any other code is `failed`.
_FAILURE_STATUSES: dict[ErrorCode, Status] = {
    ErrorCode.TIMEOUT: Status.TIMEOUT,
    ErrorCode.DEADLINE_EXCEEDED: Status.EXPIRED,
    ErrorCode.CANCELLED: Status.CANCELLED,
    **{code: Status.REJECTED for code in REJECTED_CODES},
}


class ImageRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    image_id: str = Field(description="Deterministic from request_id and image index.")
    url: str = Field(description="BASE_URL/<key>, or a presigned GET URL.")
    seed: int = Field(description="Generating this seed alone reproduces this image.")
    key: str = Field(description="Object key in the store.")
    width: int
    height: int
    # 1.1. Defaults, so that results published before 1.1 (all PNG) still parse.
    content_type: str = Field("image/png", description="The object's media type (1.1).")
    bytes: int | None = Field(
        None,
        ge=0,
        description=(
            "The object's size in bytes (1.1); null only for an image served from the store "
            "that was written before 1.1."
        ),
    )


class AuditLora(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    scale: float


class Audit(BaseModel):
    model_config = ConfigDict(frozen=True)

    policy: str = Field(
        description="Negative prompt policy: 'standard' (safe default) or 'custom'."
    )
    duration_sec: str = Field(description="Wall time of the generation, seconds, as a string.")
    model: str
    note: str | None = Field(None, description="E.g. that the tiny test model draws noise.")
    # 1.2, present only when used: results of other requests stay what 1.1 wrote.
    init_image_sha256: str | None = Field(
        None,
        description="Image-to-image (1.2): SHA-256 (hex) of the init image's bytes.",
        exclude_if=lambda value: value is None,
    )
    loras: list[AuditLora] | None = Field(
        None,
        description="LoRA adapters applied (1.2), with their scales.",
        exclude_if=lambda value: value is None,
    )


class GenerationResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    request_id: str | None = Field(description="Null only on dead-letter records.")
    status: Status
    images: list[ImageRef] = Field(default_factory=list)
    audit: Audit | None = None
    error: ErrorInfo | None = None
    late: bool = Field(
        False,
        description=(
            "True on a completed result published after the request's deadline (or "
            "MAX_REQUEST_AGE_SECONDS): its images were generated in time and stored, and the "
            "deadline passed while they were stored or published."
        ),
    )

    @classmethod
    def failure(
        cls, request_id: str, status: Status, error: ErrorInfo, audit: Audit | None = None
    ) -> GenerationResult:
        return cls(request_id=request_id, status=status, error=error, audit=audit)

    @classmethod
    def failed(cls, request_id: str, code: ErrorCode) -> GenerationResult:
        """A request that could not be completed, with the code's fixed public message."""
        status = _FAILURE_STATUSES.get(code, Status.FAILED)
        return cls(request_id=request_id, status=status, error=ErrorInfo.public(code))


def bounded(result: GenerationResult) -> GenerationResult:
    """`result` itself when its JSON fits MAX_RESULT_BYTES, else a smaller one that does.

    In this order: violations dropped from the end (counted in `omitted_violations`); then the
    texts of the error and the audit shortened; and when even that does not fit (thousands of
    images), the minimal `result_refused` result, whose size is bounded by construction. A
    result that cannot be serialised at all (a lone surrogate in a text) counts as too large.
    """
    if _fits(result):
        return result
    if result.error is not None:
        fewer = _fewer_violations(result, result.error)
        if fewer is not None:
            return fewer
    shorter = _short_texts(result)
    return shorter if _fits(shorter) else _minimal(result)


def _fits(result: GenerationResult) -> bool:
    try:
        return len(result.model_dump_json().encode("utf-8")) <= MAX_RESULT_BYTES
    except ValueError:  # PydanticSerializationError, UnicodeEncodeError: a lone surrogate
        return False


def _fewer_violations(result: GenerationResult, error: ErrorInfo) -> GenerationResult | None:
    """The most violations (up to MAX_VIOLATIONS) that fit, or None if none do."""
    if not _fits(_keeping(result, error, 0)):
        return None
    low, high = 0, min(len(error.violations), MAX_VIOLATIONS)
    while low < high:  # fewer violations never make a result larger: a binary search holds
        middle = (low + high + 1) // 2
        if _fits(_keeping(result, error, middle)):
            low = middle
        else:
            high = middle - 1
    return _keeping(result, error, low)


def _keeping(result: GenerationResult, error: ErrorInfo, count: int) -> GenerationResult:
    omitted = error.omitted_violations + len(error.violations) - count
    update = {"violations": error.violations[:count], "omitted_violations": omitted}
    return result.model_copy(update={"error": error.model_copy(update=update)})


def _short_texts(result: GenerationResult) -> GenerationResult:
    """No violations, and every free text of the error and the audit clipped; images intact."""
    error, audit = result.error, result.audit
    if error is not None:
        error = ErrorInfo(
            code=error.code,
            message=clip(error.message, MAX_VIOLATION_MESSAGE_CHARS),
            omitted_violations=error.omitted_violations + len(error.violations),
        )
    if audit is not None:
        audit = Audit(
            policy=clip(audit.policy, MAX_FIELD_CHARS),
            duration_sec=clip(audit.duration_sec, MAX_FIELD_CHARS),
            model=clip(audit.model, MAX_VIOLATION_MESSAGE_CHARS),
            note=None if audit.note is None else clip(audit.note, MAX_VIOLATION_MESSAGE_CHARS),
        )
    return result.model_copy(update={"error": error, "audit": audit})


def _minimal(result: GenerationResult) -> GenerationResult:
    """About 200 bytes of fixed text plus a request_id of at most 128 characters, 6 bytes each at
    worst as JSON (`\\u0000`): far below MAX_RESULT_BYTES whatever `result` held."""
    request_id = result.request_id
    return GenerationResult(
        request_id=None if request_id is None else clip(request_id, _MAX_REQUEST_ID_CHARS),
        status=Status.FAILED,
        error=ErrorInfo.public(ErrorCode.RESULT_REFUSED),
    )
