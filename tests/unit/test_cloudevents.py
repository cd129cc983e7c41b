"""CloudEvents binary-mode headers and W3C trace context carried from a request."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest

from schemas.cloudevents import (
    DEAD_LETTER_TYPE,
    PROGRESS_TYPE,
    RESULT_TYPE,
    ce_source,
    cloudevent_headers,
    trace_headers,
)

PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_cloudevent_headers_in_binary_mode() -> None:
    moment = datetime(2026, 5, 1, 12, tzinfo=UTC)
    headers = cloudevent_headers(RESULT_TYPE, ce_source("image-workers"), "req-1", time=moment)
    assert [name for name, _ in headers] == [
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
    ]
    values = {name: value.decode() for name, value in headers}
    assert values["ce_specversion"] == "1.0"
    uuid.UUID(values["ce_id"])
    assert values["ce_source"] == "urn:sdxl-worker:image-workers"
    assert values["ce_type"] == "generation.result.v1"
    assert values["ce_time"] == "2026-05-01T12:00:00.000Z"
    assert values["ce_subject"] == "req-1"
    assert values["content-type"] == "application/json"
    assert all(isinstance(value, bytes) for _, value in headers)


def test_ids_are_unique_and_time_defaults_to_now() -> None:
    ids = {dict(cloudevent_headers(PROGRESS_TYPE, "s", "r"))["ce_id"] for _ in range(100)}
    assert len(ids) == 100
    ce_time = dict(cloudevent_headers(PROGRESS_TYPE, "s", "r"))["ce_time"].decode()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ce_time)
    assert dict(cloudevent_headers(PROGRESS_TYPE, "s", "r", event_id="e-1"))["ce_id"] == b"e-1"


def test_a_dead_letter_without_request_id_has_no_subject() -> None:
    names = [name for name, _ in cloudevent_headers(DEAD_LETTER_TYPE, "s", None)]
    assert "ce_subject" not in names and "ce_type" in names


def test_ce_source_keeps_urns_valid() -> None:
    assert ce_source("worker-7.example.com") == "urn:sdxl-worker:worker-7.example.com"
    assert ce_source("a b/c") == "urn:sdxl-worker:a-b-c"
    assert ce_source("") == "urn:sdxl-worker:unknown"


def test_trace_headers_carry_a_valid_traceparent_and_tracestate() -> None:
    incoming = [
        ("ce_specversion", b"1.0"),
        ("TraceParent", PARENT.encode()),
        ("tracestate", b"congo=t61rcWkgMzE"),
        ("tracestate", b"rojo=00f067aa0ba902b7"),
    ]
    assert trace_headers(incoming) == [
        ("traceparent", PARENT.encode()),
        ("tracestate", b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ]


def test_the_cloudevents_tracing_extension_is_read_too() -> None:
    assert trace_headers([("ce_traceparent", PARENT.encode())]) == [
        ("traceparent", PARENT.encode())
    ]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"garbage",
        PARENT.upper().encode(),  # hex must be lowercase
        b"ff" + PARENT[2:].encode(),  # version ff is forbidden
        PARENT.replace("4bf92f3577b34da6a3ce929d0e0e4736", "0" * 32).encode(),
        PARENT.replace("00f067aa0ba902b7", "0" * 16).encode(),
        (PARENT + "-extra").encode(),  # version 00 has exactly four fields
        PARENT[:-1].encode(),
        b"\xff\xfe",
        None,
    ],
)
def test_invalid_traceparents_are_dropped_with_their_tracestate(value: bytes | None) -> None:
    assert trace_headers([("traceparent", value), ("tracestate", b"congo=x")]) == []  # type: ignore[list-item]


def test_a_later_version_may_append_fields_which_are_not_carried() -> None:
    later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-cafe"
    assert trace_headers([("traceparent", later.encode())]) == [("traceparent", PARENT.encode())]


def test_a_megabyte_traceparent_of_a_later_version_comes_out_as_55_bytes() -> None:
    """A later version may append fields of any length: they would ride on every progress event
    and the result. Only the four fields are carried, re-serialised as version 00."""
    huge = b"01" + PARENT[2:].encode() + b"-" + b"x" * 1_000_000
    carried = trace_headers([("traceparent", huge), ("tracestate", b"congo=x")])
    assert carried == [("traceparent", PARENT.encode()), ("tracestate", b"congo=x")]
    assert len(carried[0][1]) <= 55
    assert trace_headers([("traceparent", b"cc" + PARENT[2:].encode())]) == [
        ("traceparent", PARENT.encode())  # no extra fields: the version is still 00 on the way out
    ]


@pytest.mark.parametrize(
    "value",
    [
        b"01" + PARENT[2:].encode() + b"x-extra",  # the 56th character must be a "-"
        b"01-" + b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".upper() + b"-01-x",
        b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",  # a field short
    ],
)
def test_a_later_version_needs_valid_first_fields(value: bytes) -> None:
    assert trace_headers([("traceparent", value)]) == []


def test_the_traceparent_is_rebuilt_not_copied() -> None:
    """White space around the value is optional white space: it is not carried either."""
    assert trace_headers([("traceparent", b"  " + PARENT.encode() + b" ")]) == [
        ("traceparent", PARENT.encode())
    ]


def _state(members: list[str]) -> list[tuple[str, bytes]]:
    return [("traceparent", PARENT.encode()), ("tracestate", ",".join(members).encode())]


def test_a_megabyte_tracestate_is_cut_by_whole_members_to_512_bytes() -> None:
    members = [f"vendor{i}=value{i:08d}" for i in range(60_000)]  # ~1.3 MB, every member valid
    headers = dict(trace_headers(_state(members)))
    state = headers["tracestate"]
    assert len(state) <= 512
    kept = state.decode().split(",")
    assert kept == members[: len(kept)] and len(kept) <= 32  # the first ones, whole


def test_a_tracestate_keeps_at_most_32_members_from_its_start() -> None:
    members = [f"k{i}=v" for i in range(40)]
    assert dict(trace_headers(_state(members)))["tracestate"] == ",".join(members[:32]).encode()


def test_long_members_go_first_when_the_tracestate_is_too_long() -> None:
    """W3C 3.3.1.5: entries over 128 characters are removed first, then from the end."""
    long = ["big=" + "x" * 200, "huge=" + "y" * 256]  # with the short ones: 516 bytes
    short = [f"s{i}=v" for i in range(10)]
    state = dict(trace_headers(_state([long[0], *short, long[1]])))["tracestate"]
    assert state == ",".join(short).encode()
    fits = ["big=" + "x" * 200, *short]  # 512 bytes or fewer: nothing is cut
    assert dict(trace_headers(_state(fits)))["tracestate"] == ",".join(fits).encode()


def test_a_tracestate_of_exactly_32_members_and_512_bytes_passes_unchanged() -> None:
    members = [f"k{i:02d}=" + "v" * 11 for i in range(32)]  # 15 bytes each
    members[0] += "w" * (512 - (15 * 32 + 31))  # the whole list: exactly 512 bytes
    value = ",".join(members).encode()
    assert len(value) == 512
    assert dict(trace_headers(_state(members)))["tracestate"] == value


def test_an_invalid_member_among_the_first_32_drops_the_whole_tracestate() -> None:
    members = [f"k{i}=v" for i in range(31)] + ["NOT VALID"]
    assert trace_headers(_state(members)) == [("traceparent", PARENT.encode())]


def test_two_traceparents_contradict_each_other() -> None:
    assert trace_headers([("traceparent", PARENT.encode())] * 2) == []


@pytest.mark.parametrize(
    "state",
    [b"no-equals-sign", b"UPPER=x", b"a=" + b"x" * 600, b"\xffbad=1", b"k=v=\x01"],
)
def test_an_invalid_tracestate_is_dropped_but_the_parent_kept(state: bytes) -> None:
    assert trace_headers([("traceparent", PARENT.encode()), ("tracestate", state)]) == [
        ("traceparent", PARENT.encode())
    ]


def test_no_headers_at_all() -> None:
    assert trace_headers(None) == [] and trace_headers([]) == []


def test_a_dead_letter_can_leave_its_content_type_to_the_original() -> None:
    headers = cloudevent_headers(DEAD_LETTER_TYPE, "s", None, content_type=None)
    assert "content-type" not in dict(headers)
