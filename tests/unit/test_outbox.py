"""The outbox: answers ready while a publish runs leave together in the next one; a lone answer
waits for nothing; what a publish raises reaches each of its answers' callers; a caller that is
cancelled does not interrupt its publish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from consumer.output.answers import Answer
from consumer.output.outbox import Outbox
from consumer.output.publishing import BrokerGaveUp
from schemas import ErrorCode, GenerationResult


class SlowAnswers:
    """Answers.publish's stand-in: each call takes `seconds`, and the groups are kept."""

    def __init__(self, seconds: float = 0.05, error: Exception | None = None) -> None:
        self.seconds = seconds
        self.error = error
        self.groups: list[list[str]] = []
        self.finished: list[str] = []

    async def publish(self, answers: Sequence[Answer], until: asyncio.Event) -> None:
        ids = [answer.result.request_id or "" for answer in answers]
        self.groups.append(ids)
        await asyncio.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        self.finished += ids


def answer(request_id: str) -> Answer:
    return Answer([], GenerationResult.failed(request_id, ErrorCode.CANCELLED))


def outbox(answers: SlowAnswers) -> Outbox:
    fake: Any = answers
    return Outbox(fake, asyncio.Event())


async def test_a_lone_answer_goes_at_once_and_those_ready_meanwhile_go_together() -> None:
    answers = SlowAnswers()
    box = outbox(answers)
    first = asyncio.create_task(box.publish(answer("a")))
    await asyncio.sleep(0.01)  # "a" is on its way
    assert answers.groups == [["a"]]
    rest = [asyncio.create_task(box.publish(answer(name))) for name in "bcd"]
    await asyncio.gather(first, *rest)
    assert answers.groups == [["a"], ["b", "c", "d"]]
    assert answers.finished == ["a", "b", "c", "d"]
    later = asyncio.create_task(box.publish(answer("e")))  # idle again: nothing to wait for
    await asyncio.sleep(0.01)
    assert answers.groups[-1] == ["e"]
    await later


async def test_what_a_publish_raises_reaches_every_caller_of_its_group() -> None:
    answers = SlowAnswers(error=BrokerGaveUp())
    box = outbox(answers)
    calls = [asyncio.create_task(box.publish(answer(name))) for name in "ab"]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, BrokerGaveUp) for outcome in outcomes)
    answers.error = None  # the outbox is usable again after a failed publish
    await box.publish(answer("c"))
    assert answers.finished == ["c"]


async def test_a_cancelled_caller_does_not_interrupt_its_publish() -> None:
    answers = SlowAnswers()
    box = outbox(answers)
    caller = asyncio.create_task(box.publish(answer("a")))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    companion = asyncio.create_task(box.publish(answer("b")))
    await companion  # "a" finished publishing, then "b" went
    assert answers.finished == ["a", "b"]
