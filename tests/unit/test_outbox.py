"""The outbox: answers ready while a send runs leave together in the next one; a lone answer
waits for nothing; the next send waits for a commit, but not for a slow one; what a publish raises
reaches each of its answers' callers; a caller that is cancelled does not interrupt its publish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from consumer.output.answers import Answer
from consumer.output.outbox import COMMIT_WAIT_SECONDS, Outbox
from consumer.output.publishing import BrokerGaveUp
from schemas import ErrorCode, GenerationResult


class SlowAnswers:
    """Answers.send and .settle's stand-in: each send takes `send_seconds`, each commit
    `commit_seconds`; the groups sent and the answers settled are kept, in order."""

    def __init__(self, send_seconds: float = 0.05, commit_seconds: float = 0.0) -> None:
        self.send_seconds = send_seconds
        self.commit_seconds = commit_seconds
        self.send_error: Exception | None = None
        self.commit_error: Exception | None = None
        self.groups: list[list[str]] = []
        self.finished: list[str] = []

    async def send(self, answers: Sequence[Answer], until: asyncio.Event) -> list[str]:
        ids = [answer.result.request_id or "" for answer in answers]
        self.groups.append(ids)
        await asyncio.sleep(self.send_seconds)
        if self.send_error is not None:
            raise self.send_error
        return ids

    async def settle(self, sent: list[str], until: asyncio.Event) -> None:
        await asyncio.sleep(self.commit_seconds)
        if self.commit_error is not None:
            raise self.commit_error
        self.finished += sent


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


async def test_the_next_send_waits_for_a_commit_but_not_for_a_slow_one() -> None:
    answers = SlowAnswers(send_seconds=0.01, commit_seconds=0.05)
    box = outbox(answers)
    first = asyncio.create_task(box.publish(answer("a")))
    await asyncio.sleep(0.03)  # "a" is sent, its commit runs: those ready meanwhile gather
    rest = [asyncio.create_task(box.publish(answer(name))) for name in "bc"]
    await asyncio.gather(first, *rest)
    assert answers.groups == [["a"], ["b", "c"]]

    slow = SlowAnswers(send_seconds=0.01, commit_seconds=1.0)
    box = outbox(slow)
    first = asyncio.create_task(box.publish(answer("a")))
    await asyncio.sleep(0.03)
    second = asyncio.create_task(box.publish(answer("b")))
    await asyncio.sleep(COMMIT_WAIT_SECONDS + 0.1)
    assert slow.groups == [["a"], ["b"]] and not slow.finished  # sent while "a" commits
    assert not first.done()  # a caller returns once its answer is committed
    await asyncio.gather(first, second)
    assert slow.finished == ["a", "b"]


async def test_what_a_publish_raises_reaches_every_caller_of_its_group() -> None:
    answers = SlowAnswers()
    box = outbox(answers)
    answers.send_error = BrokerGaveUp()
    calls = [asyncio.create_task(box.publish(answer(name))) for name in "ab"]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, BrokerGaveUp) for outcome in outcomes)
    answers.send_error, answers.commit_error = None, BrokerGaveUp()
    calls = [asyncio.create_task(box.publish(answer(name))) for name in "cd"]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(outcome, BrokerGaveUp) for outcome in outcomes)
    answers.commit_error = None  # the outbox is usable again after a failed publish
    await box.publish(answer("e"))
    assert answers.finished == ["e"]


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
