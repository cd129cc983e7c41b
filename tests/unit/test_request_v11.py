"""Contract 1.1 request fields: deadline, schema_version, params.format and params.quality; the
new statuses and error codes. Every one is optional: version-1 events are covered unchanged by
test_validation.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from consumer.generation.engine import plan_job
from schemas import (
    Accepted,
    ErrorCode,
    GenerationRequest,
    GenerationResult,
    Rejected,
    RequestLimits,
    Status,
    ViolationCode,
    parse_request,
)
from schemas.errors import PUBLIC_MESSAGES
from schemas.params import DEFAULT_QUALITY
from schemas.request import major_version
from schemas.times import format_utc, parse_rfc3339

LIMITS = RequestLimits(allowed_models=("tiny-sdxl",), default_model="tiny-sdxl")


def parse(**fields: Any) -> Accepted | Rejected:
    body = {"request_id": "req-1", "prompt": "a corgi", **fields}
    outcome = parse_request(json.dumps(body).encode(), LIMITS)
    assert isinstance(outcome, Accepted | Rejected), outcome
    return outcome


def accepted(**fields: Any) -> GenerationRequest:
    outcome = parse(**fields)
    assert isinstance(outcome, Accepted), outcome
    return outcome.request


def codes(**fields: Any) -> list[tuple[str, str]]:
    outcome = parse(**fields)
    assert isinstance(outcome, Rejected), outcome
    return [(v.field, v.code.value) for v in outcome.error.violations]


# --- deadline ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-05-01T12:00:00Z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01t12:00:00z", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        ("2026-05-01 12:00:00+00:00", datetime(2026, 5, 1, 12, tzinfo=UTC)),
        (
            "2026-05-01T14:30:00.123456789+02:00",  # nanoseconds: cut to microseconds
            datetime(2026, 5, 1, 12, 30, 0, 123456, tzinfo=UTC),
        ),
        ("2026-05-01T07:00:00.5-05:00", datetime(2026, 5, 1, 12, 0, 0, 500000, tzinfo=UTC)),
    ],
)
def test_deadline_is_an_aware_datetime(text: str, expected: datetime) -> None:
    deadline = accepted(deadline=text).deadline
    assert deadline == expected and deadline is not None and deadline.tzinfo is not None


@pytest.mark.parametrize(
    "text",
    [
        "2026-05-01T12:00:00",  # naive: the instant is unknown
        "2026-05-01",
        "2026-05-01T12:00Z",
        "20260501T120000Z",
        "2026-W18-5T12:00:00Z",
        "2026-13-01T12:00:00Z",
        "2026-05-01T24:00:00Z",
        "2026-05-01T12:00:00+2:00",
        "tomorrow",
        "",
    ],
)
def test_a_deadline_that_is_not_rfc3339_with_a_zone_is_a_violation(text: str) -> None:
    assert codes(deadline=text) == [("deadline", "invalid_deadline")]


def test_naive_deadline_says_what_is_missing() -> None:
    outcome = parse(deadline="2026-05-01T12:00:00")
    assert isinstance(outcome, Rejected)
    assert "zone" in outcome.error.violations[0].message


@pytest.mark.parametrize("value", [1767225600, True, ["2026-05-01T12:00:00Z"]])
def test_a_deadline_of_another_type_is_invalid_type(value: object) -> None:
    assert codes(deadline=value) == [("deadline", "invalid_type")]


def test_null_or_absent_deadline_is_none() -> None:
    assert accepted().deadline is None and accepted(deadline=None).deadline is None


def test_deadline_helpers() -> None:
    request = accepted(deadline="2026-05-01T12:00:00Z")
    before = datetime(2026, 5, 1, 11, 59, 30, tzinfo=UTC)
    assert request.seconds_left(before) == 30.0
    assert not request.deadline_passed(before)
    assert request.deadline_passed(before + timedelta(seconds=30))
    assert accepted().seconds_left(before) is None and not accepted().deadline_passed(before)


def test_a_past_deadline_is_still_a_valid_request() -> None:
    """Whether it is too late is the worker's decision at run time, not the validator's."""
    assert accepted(deadline="2000-01-01T00:00:00Z").deadline_passed(datetime.now(UTC))


def test_rfc3339_reader_and_utc_writer() -> None:
    moment = parse_rfc3339("2026-05-01T14:30:00.25+02:00")
    assert format_utc(moment) == "2026-05-01T12:30:00.250Z"
    assert format_utc(datetime(2026, 5, 1, 12)) == "2026-05-01T12:00:00.000Z"  # naive = UTC
    east = datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=9)))
    assert format_utc(east) == "2026-05-01T03:00:00.000Z"
    assert format_utc().endswith("Z")


# --- schema_version ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["1", "1.0", "1.1", "1.7"])
def test_any_version_1_is_read(version: str) -> None:
    assert accepted(schema_version=version).schema_version == version


@pytest.mark.parametrize("version", ["2", "2.0", "0.9", "10"])
def test_another_major_version_is_rejected_with_its_own_code(version: str) -> None:
    # A version-2 event follows rules this worker does not know: no other violation is listed.
    outcome = parse(schema_version=version, params={"width": 7, "new_v2_field": 1}, more=1)
    assert isinstance(outcome, Rejected)
    assert outcome.error.code is ErrorCode.UNSUPPORTED_VERSION
    assert outcome.error.message == PUBLIC_MESSAGES[ErrorCode.UNSUPPORTED_VERSION]
    [violation] = outcome.error.violations
    assert (violation.field, violation.code) == (
        "schema_version",
        ViolationCode.UNSUPPORTED_VERSION,
    )
    assert outcome.result().status is Status.REJECTED


@pytest.mark.parametrize("version", ["", "v1", "1.1.0", "1.", "one", "1" * 5])
def test_a_malformed_version_is_a_plain_violation(version: str) -> None:
    assert codes(schema_version=version) == [("schema_version", "invalid_schema_version")]


def test_a_numeric_version_is_invalid_type() -> None:
    """1.10 and 1.1 are the same JSON number: versions are strings."""
    assert codes(schema_version=1.1) == [("schema_version", "invalid_type")]


def test_major_version() -> None:
    assert [major_version(v) for v in ("1", "1.1", "2.0", "x", "1.1.1")] == [1, 1, 2, None, None]


def test_constructing_a_request_of_another_major_version_fails() -> None:
    with pytest.raises(ValueError, match="not supported"):
        GenerationRequest.model_validate({"request_id": "r", "prompt": "p", "schema_version": "2"})


# --- format and quality ------------------------------------------------------------------------


def test_format_defaults_to_png_without_quality() -> None:
    params = accepted().params
    assert (params.format, params.quality, params.output_quality) == ("png", None, None)


@pytest.mark.parametrize("image_format", ["jpeg", "webp"])
def test_lossy_formats_take_a_quality_or_the_default(image_format: str) -> None:
    params = accepted(params={"format": image_format}).params
    assert (params.format, params.quality, params.output_quality) == (
        image_format,
        None,
        DEFAULT_QUALITY,
    )
    for quality in (1, 55, 100):
        params = accepted(params={"format": image_format, "quality": quality}).params
        assert params.output_quality == quality


def test_quality_with_png_is_refused() -> None:
    assert codes(params={"quality": 90}) == [("params.quality", "quality_not_applicable")]
    assert codes(params={"format": "png", "quality": 90}) == [
        ("params.quality", "quality_not_applicable")
    ]


@pytest.mark.parametrize("quality", [0, 101, -5])
def test_quality_out_of_range(quality: int) -> None:
    assert codes(params={"format": "jpeg", "quality": quality}) == [
        ("params.quality", "quality_out_of_range")
    ]


@pytest.mark.parametrize(("field", "value"), [("quality", "90"), ("quality", 90.0)])
def test_quality_is_strictly_an_integer(field: str, value: object) -> None:
    assert codes(params={"format": "webp", field: value}) == [(f"params.{field}", "invalid_type")]


@pytest.mark.parametrize("image_format", ["gif", "PNG", "jpg", 1, None])
def test_unknown_formats_are_refused(image_format: object) -> None:
    # The quality is not also blamed on the format it could not be checked against.
    assert codes(params={"format": image_format, "quality": 50}) == [
        ("params.format", "unsupported_format")
    ]


def test_plan_job_carries_format_and_quality_outside_the_batch_key() -> None:
    png = plan_job(accepted(), "n")
    webp = plan_job(accepted(params={"format": "webp"}), "n")
    jpeg = plan_job(accepted(params={"format": "jpeg", "quality": 70}), "n")
    assert (png.format, png.quality) == ("png", None)
    assert (webp.format, webp.quality) == ("webp", DEFAULT_QUALITY)
    assert (jpeg.format, jpeg.quality) == ("jpeg", 70)
    assert png.batch_key == webp.batch_key == jpeg.batch_key  # one engine call can hold all three


# --- statuses and error codes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (ErrorCode.DEADLINE_EXCEEDED, Status.EXPIRED),
        (ErrorCode.CANCELLED, Status.CANCELLED),
        (ErrorCode.TIMEOUT, Status.TIMEOUT),
        (ErrorCode.GENERATION_FAILED, Status.FAILED),
    ],
)
def test_failed_maps_codes_to_statuses(code: ErrorCode, status: Status) -> None:
    result = GenerationResult.failed("req-1", code)
    assert result.status is status and result.error is not None
    assert (result.error.code, result.error.message) == (code, PUBLIC_MESSAGES[code])


def test_new_values_are_spelled_as_documented() -> None:
    assert {"expired", "cancelled"} <= {s.value for s in Status}
    new_codes = {"unsupported_version", "deadline_exceeded", "cancelled"}
    assert new_codes <= {c.value for c in ErrorCode}
    assert set(ErrorCode) == set(PUBLIC_MESSAGES)  # every code has its fixed public text


def test_a_full_1_1_request_round_trips() -> None:
    request = accepted(
        schema_version="1.1",
        deadline="2026-05-01T12:00:00Z",
        params={"format": "jpeg", "quality": 80, "seed": 5},
    )
    dumped = json.loads(request.model_dump_json(exclude_none=True))
    assert dumped["deadline"] == "2026-05-01T12:00:00Z"
    again = parse_request(json.dumps(dumped).encode(), LIMITS)
    assert isinstance(again, Accepted) and again.request == request


def test_the_contract_page_s_1_1_examples_are_what_the_contract_reads() -> None:
    from pathlib import Path

    from schemas import parse_control, parse_progress

    contract = (Path(__file__).parents[2] / "docs" / "contract.md").read_text(encoding="utf-8")
    blocks = [block.split("```", 1)[0] for block in contract.split("```json\n")[1:]]
    by_kind = {
        "request": [b for b in blocks if '"schema_version": "1.1"' in b],
        "progress": [b for b in blocks if '"stage"' in b],
        "control": [b for b in blocks if '"type": "cancel"' in b],
    }
    assert all(len(found) == 1 for found in by_kind.values()), by_kind
    request = parse_request(by_kind["request"][0].encode(), RequestLimits())
    assert isinstance(request, Accepted) and request.request.params.format == "webp"
    assert parse_progress(by_kind["progress"][0].encode()) is not None
    assert parse_control(by_kind["control"][0].encode()) is not None
