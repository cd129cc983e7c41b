"""The one decision about a record's fate (consumer/requests/decision.py): one test per row of its
table, each with facts that reach exactly that row, and the precedence the contract promises."""

from __future__ import annotations

import pytest

from consumer.requests.decision import RULES, Action, Decision, Facts, Stored, decide
from schemas import ErrorCode

CANCELLED, EXPIRED = ErrorCode.CANCELLED, ErrorCode.DEADLINE_EXCEEDED

# (the rule's name, facts that reach it, the decision expected)
ROWS: list[tuple[str, Facts, Action, ErrorCode | None]] = [
    ("no usable request_id", Facts(has_request_id=False, valid=False), Action.DEAD_LETTER, None),
    ("invalid", Facts(valid=False, stop=CANCELLED), Action.REFUSE, None),
    (
        "answered already",
        Facts(stored=Stored.SAME, stop=CANCELLED, attempts=3, max_attempts=3),
        Action.ANSWER_FROM_STORE,
        None,
    ),
    (
        "request_id stored for other parameters",
        Facts(stored=Stored.OTHER, stop=EXPIRED),
        Action.REFUSE,
        ErrorCode.REQUEST_ID_CONFLICT,
    ),
    (
        "request_id taken with other parameters",
        Facts(duplicate_conflict=True, stop=CANCELLED),
        Action.REFUSE,
        ErrorCode.REQUEST_ID_CONFLICT,
    ),
    ("cancelled", Facts(stop=CANCELLED, attempts=5, max_attempts=3), Action.STOP, CANCELLED),
    ("past its deadline", Facts(stop=EXPIRED, attempts=5, max_attempts=3), Action.STOP, EXPIRED),
    (
        "attempts exhausted",
        Facts(attempts=3, max_attempts=3),
        Action.REFUSE,
        ErrorCode.ATTEMPTS_EXHAUSTED,
    ),
    (
        "suspect: a worker died running it",
        Facts(attempts=2, max_attempts=3),
        Action.RUN_ALONE,
        None,
    ),
    ("runs", Facts(), Action.RUN_BATCHED, None),
]


def test_every_rule_of_the_table_has_its_row_here() -> None:
    assert [row[0] for row in ROWS] == [rule.name for rule in RULES]


@pytest.mark.parametrize(("rule", "facts", "action", "code"), ROWS, ids=[row[0] for row in ROWS])
def test_each_row(rule: str, facts: Facts, action: Action, code: ErrorCode | None) -> None:
    assert decide(facts) == Decision(action, code, rule)


@pytest.mark.parametrize("stop", [CANCELLED, EXPIRED])
def test_a_request_already_answered_stays_answered(stop: ErrorCode) -> None:
    """A stored answer beats a later cancel or deadline (the commit of the first answer did not
    land, and the request is read again)."""
    assert decide(Facts(stored=Stored.SAME, stop=stop)).action is Action.ANSWER_FROM_STORE


def test_a_store_that_cannot_be_read_does_not_stop_a_request_from_running() -> None:
    assert decide(Facts(stored=Stored.UNKNOWN)).action is Action.RUN_BATCHED


def test_no_guard_never_exhausts_attempts() -> None:
    assert decide(Facts(attempts=10, max_attempts=0)).action is Action.RUN_ALONE
