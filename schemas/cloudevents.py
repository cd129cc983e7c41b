"""CloudEvents 1.0 headers for the Kafka protocol binding (binary mode), and W3C trace context.

In binary mode the record value stays the plain JSON event and the CloudEvents attributes travel
as `ce_*` headers, with `content-type` for `datacontenttype`: consumers that know nothing of
CloudEvents read the same values as before. Pure functions; the caller attaches the headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime

from schemas.times import format_utc

Headers = list[tuple[str, bytes]]

SPEC_VERSION = "1.0"
JSON_CONTENT_TYPE = "application/json"
# ce_type of each event; the suffix is the contract's major version.
RESULT_TYPE = "generation.result.v1"
PROGRESS_TYPE = "generation.progress.v1"
DEAD_LETTER_TYPE = "generation.dead_letter.v1"
REQUEST_TYPE = "generation.request.v1"  # what GenerationClient stamps on requests
CONTROL_TYPE = "generation.control.v1"  # ... and on control commands
SOURCE_PREFIX = "urn:sdxl-worker:"

_URN_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")
# W3C Trace Context level 1: version-traceid-parentid-flags, lowercase hex. A later version may
# append fields after a "-"; version ff is forbidden, all-zero ids are invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_TRACESTATE_BYTES = 512
_MAX_TRACESTATE_MEMBERS = 32
_TRACESTATE_MEMBER = re.compile(
    r"[a-z0-9][a-z0-9_*/@-]{0,255}=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)


def ce_source(name: str) -> str:
    """The ce_source of `name` (a consumer group, a host): urn:sdxl-worker:<name>, with every
    character a URN cannot hold replaced by "-"."""
    return SOURCE_PREFIX + (_URN_UNSAFE.sub("-", name) or "unknown")


def cloudevent_headers(
    event_type: str,
    source: str,
    subject: str | None,
    *,
    event_id: str | None = None,
    time: datetime | None = None,
    content_type: str | None = JSON_CONTENT_TYPE,
) -> Headers:
    """The binary-mode headers of one event: ce_specversion, ce_id (a fresh UUID unless given),
    ce_source, ce_type, ce_time (RFC 3339 UTC; default now), ce_subject (the request_id; left
    out when None, as on a dead letter without one) and content-type (application/json; None
    leaves it out: a dead letter's value is the original bytes, whatever they are)."""
    headers = [
        ("ce_specversion", SPEC_VERSION),
        ("ce_id", event_id or str(uuid.uuid4())),
        ("ce_source", source),
        ("ce_type", event_type),
        ("ce_time", format_utc(time)),
    ]
    if subject:
        headers.append(("ce_subject", subject))
    if content_type:
        headers.append(("content-type", content_type))
    return [(name, value.encode("utf-8")) for name, value in headers]


def trace_headers(headers: Iterable[tuple[str, bytes | None]] | None) -> Headers:
    """The W3C trace context of a request, to carry onto the records it causes.

    `traceparent` (or the CloudEvents tracing extension's `ce_traceparent`) when exactly one
    valid value is present, and then `tracestate` when it is well-formed; [] otherwise. Names
    are matched without regard to case and returned in lowercase. Never raises."""
    found: dict[str, list[bytes]] = {}
    for name, value in headers or ():
        key = name.lower() if isinstance(name, str) else ""
        if key in ("traceparent", "ce_traceparent", "tracestate", "ce_tracestate"):
            found.setdefault(key.removeprefix("ce_"), []).append(value or b"")
    parents = found.get("traceparent", [])
    # Several traceparents contradict each other: the spec says to start afresh.
    parent = _traceparent(parents[0]) if len(parents) == 1 else None
    if parent is None:
        return []
    carried = [("traceparent", parent.encode("ascii"))]
    state = _tracestate(found.get("tracestate", []))
    if state is not None:
        carried.append(("tracestate", state.encode("ascii")))
    return carried


def _traceparent(raw: bytes) -> str | None:
    text = _ascii(raw)
    match = _TRACEPARENT.fullmatch(text.strip()) if text is not None else None
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return match.group(0)


def _tracestate(values: list[bytes]) -> str | None:
    """Several tracestate headers join into one list, as HTTP would join them."""
    texts = [_ascii(value) for value in values]
    if not texts or any(text is None for text in texts):
        return None
    members = [m.strip() for text in texts if text for m in text.split(",") if m.strip()]
    joined = ",".join(members)
    valid = all(_TRACESTATE_MEMBER.fullmatch(member) for member in members)
    if not members or not valid or len(members) > _MAX_TRACESTATE_MEMBERS:
        return None
    return joined if len(joined) <= _MAX_TRACESTATE_BYTES else None


def _ascii(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except (UnicodeDecodeError, AttributeError):
        return None
    return text if text.isprintable() else None
