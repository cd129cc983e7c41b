"""Record ages by a clock the worker can trust (consumer/intake/clocks.py)."""

from __future__ import annotations

from consumer.intake.clocks import LOG_APPEND_TIME, record_time

CREATE_TIME = 0
NOW = 1_800_000_000.0


def test_the_brokers_append_time_is_taken_as_it_is() -> None:
    assert record_time(int((NOW - 100) * 1000), LOG_APPEND_TIME, 30, NOW) == NOW - 100


def test_a_producers_clock_gets_the_skew_allowance() -> None:
    """A producer whose clock is 20 s behind: its record looks 20 s older than it is."""
    assert record_time(int((NOW - 20) * 1000), CREATE_TIME, 30, NOW) == NOW


def test_a_clock_ahead_never_makes_a_record_younger_than_now() -> None:
    assert record_time(int((NOW + 3600) * 1000), CREATE_TIME, 30, NOW) == NOW
