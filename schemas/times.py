"""RFC 3339 timestamps: the strict reader for request deadlines and the one UTC writer that every
event uses (`ts` of progress events, `ce_time` of CloudEvents headers)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

# RFC 3339 section 5.6, with the zone optional here so that a naive timestamp gets its own,
# clearer error; "t", "z" and a space for "T" are allowed as the RFC's notes allow them.
_RFC3339 = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2}(?:\.\d+)?)"
    r"(?P<zone>[Zz]|[+-]\d{2}:\d{2})?"
)


class NaiveTimestampError(ValueError):
    """A well-formed date and time without a zone offset: its instant is unknown."""


def parse_rfc3339(text: str) -> datetime:
    """The aware datetime `text` names. ValueError when it is not an RFC 3339 date-time,
    NaiveTimestampError when it has no zone. Fractions beyond microseconds are truncated."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:40]!r}")
    if match["zone"] is None:
        raise NaiveTimestampError("timestamp has no time zone offset")
    zone = "+00:00" if match["zone"] in "Zz" else match["zone"]
    clock, _, fraction = match["time"].partition(".")
    # fromisoformat takes 3 or 6 fraction digits only on some Pythons: always give it 6.
    micros = f".{fraction[:6]:0<6}" if fraction else ""
    return datetime.fromisoformat(f"{match['date']}T{clock}{micros}{zone}")


def format_utc(moment: datetime | None = None) -> str:
    """`moment` (default: now) as "YYYY-MM-DDTHH:MM:SS.mmmZ"; a naive `moment` is taken as UTC."""
    moment = datetime.now(UTC) if moment is None else moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
