"""How old a record is, by a clock the worker can trust.

A record's timestamp is the producer's clock (CreateTime) unless the topic is configured with
`message.timestamp.type=LogAppendTime`, when it is the broker's. Retention of cancels and
MAX_REQUEST_AGE_SECONDS are measured from it: a producer whose clock is behind would get its
cancels dropped and its requests expired early, one whose clock is ahead would make them last.
"""

from __future__ import annotations

LOG_APPEND_TIME = 1  # ConsumerRecord.timestamp_type when the broker stamped the record


def record_time(timestamp_ms: int, timestamp_type: int, skew_seconds: float, now: float) -> float:
    """When the record was written, in Unix seconds: the broker's append time when the topic
    keeps it; otherwise the producer's create time moved `skew_seconds` later (the skew
    allowance, CLOCK_SKEW_SECONDS), and never later than `now` (when it was read)."""
    seconds = timestamp_ms / 1000
    if timestamp_type != LOG_APPEND_TIME:
        seconds += skew_seconds
    return min(seconds, now)
