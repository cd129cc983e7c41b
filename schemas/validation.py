"""Pure function from the raw bytes of an event to one of three outcomes.

- `Accepted`: a valid request for the engine;
- `Rejected`: invalid, but it carries a usable request_id, so it gets a `rejected` result;
- `Undeliverable`: no usable request_id can be read, so it goes to the dead-letter topic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import islice

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.errors import (
    MAX_FIELD_CHARS,
    MAX_VIOLATIONS,
    PUBLIC_MESSAGES,
    ErrorCode,
    ErrorInfo,
    Violation,
    ViolationCode,
    clip,
)
from schemas.limits import RequestLimits
from schemas.request import (
    REQUEST_ID_PATTERN,
    SUPPORTED_MAJOR_VERSION,
    GenerationRequest,
    major_version,
)
from schemas.result import GenerationResult, Status, bounded
from schemas.screen import Screened, screen

_REQUEST_ID = re.compile(REQUEST_ID_PATTERN)

# pydantic's own error types, mapped onto the contract's stable violation codes.
_PYDANTIC_CODES: dict[str, ViolationCode] = {
    "missing": ViolationCode.MISSING_FIELD,
    "extra_forbidden": ViolationCode.UNKNOWN_FIELD,
    "finite_number": ViolationCode.NOT_FINITE,
    "string_pattern_mismatch": ViolationCode.INVALID_REQUEST_ID,
    "string_too_short": ViolationCode.PROMPT_EMPTY,
    "multiple_of": ViolationCode.SIZE_NOT_MULTIPLE_OF_8,
    "literal_error": ViolationCode.UNSUPPORTED_FORMAT,  # params.format is the only Literal
}
_RANGE_CODES: dict[str, ViolationCode] = {
    "width": ViolationCode.SIZE_OUT_OF_RANGE,
    "height": ViolationCode.SIZE_OUT_OF_RANGE,
    "steps": ViolationCode.STEPS_OUT_OF_RANGE,
    "cfg": ViolationCode.CFG_OUT_OF_RANGE,
    "num_images": ViolationCode.NUM_IMAGES_OUT_OF_RANGE,
    "seed": ViolationCode.SEED_OUT_OF_RANGE,
    "quality": ViolationCode.QUALITY_OUT_OF_RANGE,
}
_RANGE_TYPES = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


@dataclass(frozen=True)
class Accepted:
    request: GenerationRequest


@dataclass(frozen=True)
class Rejected:
    request_id: str
    error: ErrorInfo

    def result(self) -> GenerationResult:
        return bounded(GenerationResult.failure(self.request_id, Status.REJECTED, self.error))


@dataclass(frozen=True)
class Undeliverable:
    error: ErrorInfo


ParseOutcome = Accepted | Rejected | Undeliverable


def parse_request(raw: bytes | None, limits: RequestLimits) -> ParseOutcome:
    """Decode and validate one event. Never raises for bad input."""
    if raw is not None and len(raw) > limits.max_event_bytes:
        return Undeliverable(ErrorInfo.public(ErrorCode.EVENT_TOO_LARGE))
    try:
        # NaN/Infinity are decoded here and refused by the model as `not_finite`, so such an event
        # still gets a `rejected` result under its request_id instead of a dead letter.
        payload = json.loads(raw or b"")
    # RecursionError: hostile nesting must not take the worker down. The exception text stays
    # out of the dead letter: the fixed public message is all a producer gets.
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Undeliverable(ErrorInfo.public(ErrorCode.INVALID_JSON))
    if not isinstance(payload, dict):
        return Undeliverable(ErrorInfo.public(ErrorCode.NOT_AN_OBJECT))
    request_id = payload.get("request_id")
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
        return Undeliverable(_request_id_error(request_id))
    unsupported = _unsupported_version(payload.get("schema_version"))
    if unsupported is not None:
        return Rejected(request_id, unsupported)
    screened = screen(payload)
    try:
        request = GenerationRequest.model_validate(screened.known, context={"limits": limits})
    except ValidationError as exc:
        return Rejected(request_id, _rejection(exc, screened))
    if screened.unknown_count:
        return Rejected(request_id, _rejection(None, screened))
    return Accepted(request)


def _unsupported_version(version: object) -> ErrorInfo | None:
    """The error for a well-formed schema_version of another major version, checked before the
    rest: the other fields of a version-2 event follow rules this worker does not know, so
    listing them as violations would only mislead. A malformed one is a plain violation."""
    if not isinstance(version, str):
        return None
    major = major_version(version)
    if major is None or major == SUPPORTED_MAJOR_VERSION:
        return None
    violation = Violation(
        field="schema_version",
        code=ViolationCode.UNSUPPORTED_VERSION,
        message=(
            f"schema_version {clip(version, MAX_FIELD_CHARS)} is not supported: "
            f"this worker reads major version {SUPPORTED_MAJOR_VERSION}"
        ),
    )
    code = ErrorCode.UNSUPPORTED_VERSION
    return ErrorInfo(code=code, message=PUBLIC_MESSAGES[code], violations=[violation])


def _rejection(exc: ValidationError | None, screened: Screened) -> ErrorInfo:
    # Without unknown keys pydantic reports at most one error per contract field: a short list.
    violations = [] if exc is None else [_violation(d) for d in exc.errors(include_url=False)]
    violations += [_unknown(field) for field in screened.unknown_fields]
    omitted = screened.unknown_count - len(screened.unknown_fields)
    return ErrorInfo.from_violations(violations, omitted=omitted)


def _unknown(field: str) -> Violation:
    # pydantic's own wording for `extra_forbidden`, so the texts do not change with the path.
    message = f"{field}: Extra inputs are not permitted"
    return Violation(field=field, code=ViolationCode.UNKNOWN_FIELD, message=message)


def _request_id_error(request_id: object) -> ErrorInfo:
    if request_id is None:
        violation = Violation(
            field="request_id", code=ViolationCode.MISSING_FIELD, message="request_id is required"
        )
    else:
        violation = Violation(
            field="request_id",
            code=ViolationCode.INVALID_REQUEST_ID,
            message=(
                "request_id must be 1-128 characters of [A-Za-z0-9._:-], "
                "starting with a letter or digit"
            ),
        )
    return ErrorInfo(
        code=ErrorCode.INVALID_REQUEST, message=violation.message, violations=[violation]
    )


def error_from_validation(exc: ValidationError) -> ErrorInfo:
    """One typed violation per broken rule, the first MAX_VIOLATIONS of them; the top-level code
    stays coarse and stable. For callers that validate a model themselves: parse_request strips
    unknown keys before pydantic sees them."""
    details = islice(exc.errors(include_url=False), MAX_VIOLATIONS)
    violations = [_violation(detail) for detail in details]
    return ErrorInfo.from_violations(violations, omitted=exc.error_count() - len(violations))


def _violation(detail: ErrorDetails) -> Violation:
    # Clipped here too, so that a message that names a long key still ends with its rule.
    field = clip(".".join(str(part) for part in detail["loc"]) or "(event)", MAX_FIELD_CHARS)
    kind = detail["type"]
    code = _code_for(kind, field)
    message = detail["msg"]
    if code is not None and kind == code.value:
        return Violation(field=field, code=code, message=message)  # already names the field
    return Violation(
        field=field, code=code or ViolationCode.INVALID_TYPE, message=f"{field}: {message}"
    )


def _code_for(kind: str, field: str) -> ViolationCode | None:
    if kind == "string_too_short" and not field.endswith("prompt"):
        return None  # an empty init_image.key or lora name (1.2): invalid_type
    if kind in ViolationCode._value2member_map_:
        return ViolationCode(kind)
    if kind in _RANGE_TYPES:
        return _RANGE_CODES.get(field.rsplit(".", 1)[-1], ViolationCode.INVALID_TYPE)
    return _PYDANTIC_CODES.get(kind)
