"""Event contract v1: request and result events, their errors and the request validator."""

from schemas.errors import ErrorCode, ErrorInfo, Violation, ViolationCode
from schemas.limits import RequestLimits
from schemas.request import GenerationParams, GenerationRequest
from schemas.result import Audit, GenerationResult, ImageRef, Status, bounded
from schemas.validation import (
    Accepted,
    ParseOutcome,
    Rejected,
    Undeliverable,
    error_from_validation,
    parse_request,
)

__all__ = [
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
