"""Event contract 1.2: request, result, progress and control events, their errors, the request
validator, and the CloudEvents headers (schemas.cloudevents)."""

from schemas.control import CancelCommand, ControlCommand, parse_control
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
from schemas.params import GenerationParams
from schemas.progress import ProgressEvent, parse_progress, progress_event
from schemas.request import CONTRACT_VERSION, GenerationRequest
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
    "CONTRACT_VERSION",
    "MAX_FIELD_CHARS",
    "MAX_MESSAGE_CHARS",
    "MAX_RESULT_BYTES",
    "MAX_VIOLATIONS",
    "MAX_VIOLATION_MESSAGE_CHARS",
    "Accepted",
    "Audit",
    "CancelCommand",
    "ControlCommand",
    "ErrorCode",
    "ErrorInfo",
    "GenerationParams",
    "GenerationRequest",
    "GenerationResult",
    "ImageRef",
    "ParseOutcome",
    "ProgressEvent",
    "Rejected",
    "RequestLimits",
    "Status",
    "Undeliverable",
    "Violation",
    "ViolationCode",
    "bounded",
    "error_from_validation",
    "parse_control",
    "parse_progress",
    "parse_request",
    "progress_event",
]
