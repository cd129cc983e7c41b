"""Events built to hurt the worker: too large, too many keys, broken Unicode, leaking internals."""

from __future__ import annotations

import json

import pytest

from schemas import (
    ErrorCode,
    ErrorInfo,
    Rejected,
    RequestLimits,
    Undeliverable,
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
