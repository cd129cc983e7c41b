"""A request's fate, decided once: the facts gathered about a record go in, one decision comes out.

Pure and table-driven (Kafka Streams' and Flink's way with side outputs): `RULES` is read top to
bottom and the first rule whose condition holds decides. Everything a worker does with a record
before it runs follows from this one function; nothing else in the worker decides whether a
request is answered, refused, stopped or run.

The first rule that can apply to a valid request is **a request already answered stays
answered**: images stored under its request_id with the same parameters beat a cancel or a
deadline that came later (an earlier delivery finished, but its offset commit did not land).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum

from schemas import ErrorCode


class Stored(Enum):
    """What the store holds under the request's id (one listing, a HEAD per image listed)."""

    NOTHING = "nothing"  # no image, or only some, all stored for these parameters
    SAME = "same"  # every image, stored for these parameters: the request was answered
    OTHER = "other"  # an image stored for other parameters: the request_id was used before
    UNKNOWN = "unknown"  # the store could not be read


class Action(StrEnum):
    DEAD_LETTER = "dead_letter"  # no usable request_id: the record goes to DLQ_TOPIC
    REFUSE = "refuse"  # answered with `code` (rejected, or failed) without running
    ANSWER_FROM_STORE = "answer_from_store"  # the stored images' `completed` result again
    STOP = "stop"  # answered `cancelled` or `expired` without running
    RUN_ALONE = "run_alone"  # a suspect: attempts on record, runs with nothing beside it
    RUN_BATCHED = "run_batched"  # batched with compatible requests


@dataclass(frozen=True)
class Facts:
    """What is known about one record when its fate is decided."""

    has_request_id: bool = True  # False: undecodable, not an object, no usable request_id
    valid: bool = True  # it passed validation (its refusal carries the validation's code)
    duplicate_conflict: bool = False  # taken beside a record with its id and other parameters
    stored: Stored = Stored.NOTHING
    stop: ErrorCode | None = None  # CANCELLED, or DEADLINE_EXCEEDED (deadline or age passed)
    attempts: int = 0  # crashes on record (the attempt journal): runs by workers that died
    max_attempts: int = 0  # MAX_ATTEMPTS; 0: no crash-loop guard


@dataclass(frozen=True)
class Decision:
    action: Action
    code: ErrorCode | None = None  # for REFUSE and STOP; None: the validation's own error
    rule: str = ""  # the rule that decided, for logs and tests


@dataclass(frozen=True)
class Rule:
    name: str
    applies: Callable[[Facts], bool]
    action: Action
    code: ErrorCode | None = None


RULES: tuple[Rule, ...] = (
    Rule("no usable request_id", lambda f: not f.has_request_id, Action.DEAD_LETTER),
    Rule("invalid", lambda f: not f.valid, Action.REFUSE),
    Rule("answered already", lambda f: f.stored is Stored.SAME, Action.ANSWER_FROM_STORE),
    Rule(
        "request_id stored for other parameters",
        lambda f: f.stored is Stored.OTHER,
        Action.REFUSE,
        ErrorCode.REQUEST_ID_CONFLICT,
    ),
    Rule(
        "request_id taken with other parameters",
        lambda f: f.duplicate_conflict,
        Action.REFUSE,
        ErrorCode.REQUEST_ID_CONFLICT,
    ),
    Rule(
        "cancelled",
        lambda f: f.stop is ErrorCode.CANCELLED,
        Action.STOP,
        ErrorCode.CANCELLED,
    ),
    Rule(
        "past its deadline",
        lambda f: f.stop is ErrorCode.DEADLINE_EXCEEDED,
        Action.STOP,
        ErrorCode.DEADLINE_EXCEEDED,
    ),
    Rule(
        "attempts exhausted",
        lambda f: f.max_attempts > 0 and f.attempts >= f.max_attempts,
        Action.REFUSE,
        ErrorCode.ATTEMPTS_EXHAUSTED,
    ),
    Rule("suspect: a worker died running it", lambda f: f.attempts > 0, Action.RUN_ALONE),
    Rule("runs", lambda f: True, Action.RUN_BATCHED),
)


def decide(facts: Facts) -> Decision:
    """The decision of the first rule of RULES that applies to `facts`."""
    for rule in RULES:
        if rule.applies(facts):
            return Decision(rule.action, rule.code, rule.name)
    raise AssertionError("the last rule applies to every record")  # pragma: no cover
