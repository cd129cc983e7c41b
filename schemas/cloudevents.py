"""CloudEvents 1.0 headers for the Kafka protocol binding (binary mode), and W3C trace context.

In binary mode the record value stays the plain JSON event and the CloudEvents attributes travel
as `ce_*` headers, with `content-type` for `datacontenttype`: consumers that know nothing of
CloudEvents read the same values as before. Pure functions; the caller attaches the headers.
"""

from __future__ import annotations

import itertools
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
# W3C Trace Context: version-traceid-parentid-flags, lowercase hex, 55 bytes. A later version may
# append fields after a "-" (any length: they are never read, never carried); version ff is
# forbidden, all-zero ids are invalid.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
TRACEPARENT_BYTES = 55
MAX_TRACESTATE_BYTES = 512
MAX_TRACESTATE_MEMBERS = 32
# A member this long goes first when the list must be cut to MAX_TRACESTATE_BYTES (W3C 3.3.1.5).
_LONG_TRACESTATE_MEMBER = 128
_LIST_ITEM = re.compile(r"[^,]+")
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
    are matched without regard to case and returned in lowercase. Never raises.

    Nothing is copied raw, so a request cannot make what it causes larger than this: the
    traceparent is rebuilt from its four fields as version 00 (55 bytes, whatever version and
    extra fields came in), the tracestate is at most MAX_TRACESTATE_MEMBERS well-formed members
    and MAX_TRACESTATE_BYTES bytes."""
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
    """The traceparent to carry, re-serialised from its fields as version 00; None if invalid.

    Version 00 is exactly the four fields. A later version is read as W3C says: its first four
    fields must be valid and, when more follows, the 56th character is a "-"; what follows is
    ignored (never decoded, never carried), and the fields go on as version 00 (the version
    this worker speaks), flags as they came."""
    if not isinstance(raw, bytes):
        return None
    value = raw.strip(b" ")  # optional white space around a header value
    head = _ascii(value[:TRACEPARENT_BYTES])
    match = _TRACEPARENT.fullmatch(head) if head is not None else None
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    rest = value[TRACEPARENT_BYTES:]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith(b"-")):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return f"00-{trace_id}-{parent_id}-{flags}"


def _tracestate(values: list[bytes]) -> str | None:
    """The tracestate to carry, None when there is none or it is malformed.

    Several tracestate headers join into one list, as HTTP would join them. A list may hold
    MAX_TRACESTATE_MEMBERS members: later ones are dropped unread (W3C puts the newest members
    first, so the oldest go). Each member kept must be well-formed (key=value), else the whole
    tracestate is dropped. A list longer than MAX_TRACESTATE_BYTES is truncated by whole
    members, never mid-member, as W3C 3.3.1.5 says: members over 128 bytes go first, then
    members from the end."""
    texts = [_ascii(value) for value in values]
    if not texts or any(text is None for text in texts):
        return None
    # Lazily: members past the 32nd are never split off, stripped or parsed.
    listed = (m.group().strip(" ") for text in texts for m in _LIST_ITEM.finditer(text or ""))
    members = list(
        itertools.islice((member for member in listed if member), MAX_TRACESTATE_MEMBERS)
    )
    if not members or not all(_TRACESTATE_MEMBER.fullmatch(member) for member in members):
        return None
    if _joined_length(members) > MAX_TRACESTATE_BYTES:
        members = [member for member in members if len(member) <= _LONG_TRACESTATE_MEMBER]
    while members and _joined_length(members) > MAX_TRACESTATE_BYTES:
        members.pop()
    return ",".join(members) or None


def _joined_length(members: list[str]) -> int:
    return sum(len(member) for member in members) + len(members) - 1


def _ascii(raw: bytes) -> str | None:
    try:
        text = raw.decode("ascii")
    except (UnicodeDecodeError, AttributeError):
        return None
    return text if text.isprintable() else None
