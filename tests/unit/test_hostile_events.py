"""Events built to hurt the worker: too large, too many keys, broken Unicode, leaking internals."""

from __future__ import annotations

import json
from typing import Any

import pytest

from schemas import (
    MAX_FIELD_CHARS,
    MAX_VIOLATIONS,
    ErrorCode,
    ErrorInfo,
    GenerationParams,
    GenerationRequest,
    Rejected,
    RequestLimits,
    Undeliverable,
    Violation,
    ViolationCode,
    parse_request,
)


def test_an_event_over_max_event_bytes_is_a_dead_letter_without_being_parsed() -> None:
    limits = RequestLimits(max_event_bytes=100)
    fits = json.dumps({"request_id": "r1", "prompt": "x" * 60}).encode()
    assert len(fits) <= 100 and not isinstance(parse_request(fits, limits), Undeliverable)
    too_large = b'{"request_id": "r1", "prompt": "' + b"x" * 100 + b'"}'
    outcome = parse_request(too_large, limits)
    assert isinstance(outcome, Undeliverable)
    assert outcome.error.code is ErrorCode.EVENT_TOO_LARGE
    assert outcome.error == outcome.error.public(ErrorCode.EVENT_TOO_LARGE)
    # Not even decoded: bytes that are no JSON at all get the same answer.
    assert parse_request(b"\xff" * 101, limits) == outcome


def test_the_default_limit_is_one_mebibyte() -> None:
    assert RequestLimits().max_event_bytes == 1024 * 1024


LIMITS = RequestLimits(
    allowed_models=("tiny-sdxl", "secret/internal-model"), default_model="tiny-sdxl"
)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"{not json", ErrorCode.INVALID_JSON),
        (b"\xff\xfe", ErrorCode.INVALID_JSON),
        (b"", ErrorCode.INVALID_JSON),
        (b"[" * 100_000, ErrorCode.INVALID_JSON),
        (b"[1, 2]", ErrorCode.NOT_AN_OBJECT),
        (b"null", ErrorCode.NOT_AN_OBJECT),
    ],
)
def test_undecodable_events_carry_only_the_fixed_public_text(raw: bytes, code: ErrorCode) -> None:
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Undeliverable)
    assert outcome.error == ErrorInfo.public(code)  # no exception text, no Python type names


def test_a_refused_model_is_named_but_the_allowlist_is_not() -> None:
    raw = json.dumps({"request_id": "r1", "prompt": "x", "params": {"model": "evil/m"}}).encode()
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Rejected)
    dumped = outcome.result().model_dump_json()
    assert "evil/m" in dumped and "not allowed" in dumped
    assert "secret/internal-model" not in dumped and "tiny-sdxl" not in dumped


def request(top: dict[str, object] | None = None, **params: object) -> bytes:
    return json.dumps({"request_id": "r1", "prompt": "x", **(top or {}), "params": params}).encode()


def rejected(raw: bytes) -> ErrorInfo:
    outcome = parse_request(raw, LIMITS)
    assert isinstance(outcome, Rejected), outcome
    outcome.result().model_dump_json().encode("utf-8")  # serialisable, as valid UTF-8
    return outcome.error


def test_thousands_of_unknown_keys_give_a_small_result() -> None:
    top = {f"unknown-{i:05}": 0 for i in range(12_000)}
    nested = {f"p{i}": 0 for i in range(3_000)}
    error = rejected(request(top, width=7, **nested))
    assert len(error.violations) == MAX_VIOLATIONS == 20
    assert error.omitted_violations == 1 + 12_000 + 3_000 - MAX_VIOLATIONS
    assert error.code is ErrorCode.INVALID_REQUEST
    # Known fields first, then params' unknown keys, then the top level's: pydantic's order.
    assert [v.field for v in error.violations[:3]] == ["params.width", "params.p0", "params.p1"]
    assert len(error.model_dump_json()) < 8 * 1024


def test_echoed_user_text_is_capped() -> None:
    error = rejected(request({"k" * 10_000: 1}, **{"\N{SNOWMAN}" * 5_000: 1}))
    for violation in error.violations:
        assert len(violation.field) <= MAX_FIELD_CHARS and violation.field.endswith(
            "\N{HORIZONTAL ELLIPSIS}"
        )
        assert len(violation.message) <= 200
        assert violation.message.endswith("Extra inputs are not permitted")
    assert error.violations[0].field.startswith("params.\N{SNOWMAN}")
    assert len(error.message) <= 1000
    model = rejected(request(model="m" * 5_000)).violations[0]
    assert len(model.message) <= 200 and "m" * 60 in model.message


def test_the_contract_types_cap_their_texts_whoever_builds_them() -> None:
    violation = Violation(field="f" * 500, code=ViolationCode.INVALID_TYPE, message="m" * 5_000)
    assert len(violation.field) == MAX_FIELD_CHARS and len(violation.message) == 200
    error = ErrorInfo.from_violations([violation] * 50)
    assert len(error.violations) == 20 and error.omitted_violations == 30
    assert len(error.message) == 1000 and error.message.endswith("\N{HORIZONTAL ELLIPSIS}")
    assert ErrorInfo.public(ErrorCode.TIMEOUT).omitted_violations == 0


def test_pydantic_never_meets_the_unknown_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic builds one error object per unknown key: 500,000 keys took it 12 s."""
    seen: list[Any] = []
    validate = GenerationRequest.model_validate

    def spy(obj: Any, **kwargs: Any) -> GenerationRequest:
        seen.append(obj)
        return validate(obj, **kwargs)

    monkeypatch.setattr(GenerationRequest, "model_validate", spy)
    top = {f"u{i}": [i] for i in range(1_000)}
    error = rejected(request(top, steps=99, **{f"p{i}": {} for i in range(1_000)}))
    assert set(seen[0]) <= set(GenerationRequest.model_fields)
    assert set(seen[0]["params"]) <= set(GenerationParams.model_fields)
    assert [v.code.value for v in error.violations[:2]] == ["steps_out_of_range", "unknown_field"]
    assert error.omitted_violations == 2_001 - MAX_VIOLATIONS
    # Unknown keys alone, on an otherwise valid request, still reject it.
    assert rejected(request({"extra": 1})).violations[0].field == "extra"


LONE = "\ud800"  # json.loads gives a str that UTF-8 cannot encode


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"prompt": f"a {LONE} b"}, "prompt"),
        ({"negative_prompt": LONE}, "negative_prompt"),
        ({"params": {"model": LONE}}, "params.model"),
        ({"params": {"model": "\udfff" * 500}}, "params.model"),
    ],
)
def test_a_lone_surrogate_in_a_text_field_is_rejected(event: dict[str, Any], field: str) -> None:
    raw = json.dumps({"request_id": "r1", "prompt": "x", **event}).encode()  # escapes it
    error = rejected(raw)
    assert [(v.field, v.code) for v in error.violations] == [(field, ViolationCode.INVALID_TYPE)]


def test_lone_surrogates_in_keys_never_reach_the_result() -> None:
    raw = request({LONE: 1, "k": {LONE: LONE}}, width={LONE: LONE}, **{f"p{LONE}": [LONE]})
    error = rejected(raw)
    fields = [v.field for v in error.violations]
    assert fields == [
        "params.width",
        "params.p\N{REPLACEMENT CHARACTER}",
        "\N{REPLACEMENT CHARACTER}",
        "k",
    ]
