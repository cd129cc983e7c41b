"""Event contract v1: request and result events, their errors and the request validator."""

from schemas.errors import (
    MAX_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_VIOLATION_MESSAGE_CHARS,
    MAX_VIOLATIONS,
    ErrorCode,
    ErrorInfo,
    Violation,
    ViolationCode,
)
from schemas.limits import RequestLimits
from schemas.request import GenerationParams, GenerationRequest
from schemas.result import MAX_RESULT_BYTES, Audit, GenerationResult, ImageRef, Status, bounded
from schemas.validation import (
    Accepted,
    ParseOutcome,
    Rejected,
    Undeliverable,
    error_from_validation,
    parse_request,
)

__all__ = [
    "MAX_FIELD_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_RESULT_BYTES",
    "MAX_VIOLATIONS",
    "MAX_VIOLATION_MESSAGE_CHARS",
    "Accepted",
    "Audit",
    "ErrorCode",
    "ErrorInfo",
    "GenerationParams",
    "GenerationRequest",
    "GenerationResult",
    "ImageRef",
    "ParseOutcome",
    "Rejected",
    "RequestLimits",
    "Status",
    "Undeliverable",
    "Violation",
    "ViolationCode",
    "bounded",
    "error_from_validation",
    "parse_request",
]
