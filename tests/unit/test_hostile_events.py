"""Events built to hurt the worker: too large, too many keys, broken Unicode, leaking internals."""

from __future__ import annotations

import json

from schemas import (
    ErrorCode,
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
