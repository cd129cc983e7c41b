"""Progress events and control commands (contract 1.1): shapes, the helper, the never-raising
parsers."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas.control import (
    MAX_CONTROL_BYTES,
    CancelCommand,
    control_value,
    parse_control,
)
from schemas.progress import ProgressEvent, parse_progress, progress_event

MOMENT = datetime(2026, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)


def test_progress_event_helper_stamps_utc() -> None:
    event = progress_event("req-1", "step", step=3, total_steps=8, now=MOMENT)
    assert json.loads(event.model_dump_json()) == {
        "request_id": "req-1",
        "stage": "step",
        "step": 3,
        "total_steps": 8,
        "ts": "2026-05-01T12:00:00.250Z",
    }
    assert event.fraction == 3 / 8
    assert progress_event("req-1", "queued").ts.endswith("Z")  # now, by default


def test_stages_and_fraction() -> None:
    assert progress_event("r", "queued", now=MOMENT).fraction is None
    assert progress_event("r", "started", total_steps=4, now=MOMENT).fraction is None
    assert progress_event("r", "finished", now=MOMENT).fraction == 1.0


@pytest.mark.parametrize(
    "fields",
    [
        {"stage": "step"},  # a step event without its step
        {"stage": "step", "step": 9, "total_steps": 8},
        {"stage": "step", "step": -1},
        {"stage": "done"},
        {"stage": "queued", "ts": "2026-05-01T12:00:00+02:00"},  # UTC only
        {"stage": "queued", "request_id": "../x"},
    ],
)
def test_invalid_progress_events_are_refused(fields: dict[str, object]) -> None:
    base: dict[str, object] = {"request_id": "r", "ts": "2026-05-01T12:00:00Z"}
    with pytest.raises(ValidationError):
        ProgressEvent.model_validate({**base, **fields})


def test_parse_progress_never_raises_and_ignores_new_fields() -> None:
    event = progress_event("req-1", "started", total_steps=4, now=MOMENT)
    raw = json.dumps({**json.loads(event.model_dump_json()), "eta_seconds": 3}).encode()
    assert parse_progress(raw) == event
    for garbage in (None, b"", b"{", b"[]", b'{"stage": "step"}', b"\xff\xfe", b"null"):
        assert parse_progress(garbage) is None


def test_cancel_command_round_trips() -> None:
    command = CancelCommand(request_id="req-1")
    assert json.loads(control_value(command)) == {"type": "cancel", "request_id": "req-1"}
    assert parse_control(control_value(command)) == command


def test_parse_control_ignores_fields_a_newer_producer_adds() -> None:
    raw = b'{"type": "cancel", "request_id": "req-1", "reason": "user left", "ts": 1}'
    assert parse_control(raw) == CancelCommand(request_id="req-1")


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"cancel req-1",
        b"\xff\x00",
        b"[]",
        b"null",
        b'"cancel"',
        b"{}",
        b'{"request_id": "req-1"}',  # no type
        b'{"type": "pause", "request_id": "req-1"}',  # a command this reader does not know
        b'{"type": ["cancel"], "request_id": "req-1"}',
        b'{"type": "cancel"}',
        b'{"type": "cancel", "request_id": "../../etc"}',
        b'{"type": "cancel", "request_id": 7}',
        b'{"type": "cancel", "request_id": "r", "type": "nope"}',
        b"[" * 100_000,  # hostile nesting
        b'{"type": "cancel", "request_id": "' + b"a" * MAX_CONTROL_BYTES + b'"}',
    ],
)
def test_parse_control_never_raises(raw: bytes | None) -> None:
    assert parse_control(raw) is None
