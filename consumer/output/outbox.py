"""Answers that are ready at about the same moment leave together: one publish, one commit.

A batch's requests are published as each one's images are stored, and on a busy worker the
results of several batches become ready within a few milliseconds. Published one by one, each
paid for its own send, wait and commit on the event loop (a fifth of the worker's CPU on a backlog
of fast requests). Here the first answer ready starts a publish at once; those that become ready
while it runs wait for it and then go together in the next one, as Nagle's algorithm does for a
socket. An idle worker's lone answer waits for nothing.
"""

from __future__ import annotations

import asyncio

from consumer.output.answers import Answer, Answers


class Outbox:
    def __init__(self, answers: Answers, until: asyncio.Event) -> None:
        """`until`: publishing gives up once it is set while the broker is away (BrokerGaveUp)."""
        self._answers = answers
        self._until = until
        self._ready: list[tuple[Answer, asyncio.Future[None]]] = []
        self._sending: asyncio.Task[None] | None = None

    async def publish(self, answer: Answer) -> None:
        """Returns once `answer` is published and committed; raises what its publish raised
        (publishing.BrokerGaveUp, Unpublishable). Cancelling the caller does not interrupt the
        publish: it runs in a task of its own, between send and commit."""
        done = asyncio.get_running_loop().create_future()
        self._ready.append((answer, done))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_ready())
        await done

    async def _send_ready(self) -> None:
        group: list[tuple[Answer, asyncio.Future[None]]] = []
        try:
            while self._ready:
                group, self._ready = self._ready, []
                error: Exception | None = None
                try:
                    await self._answers.publish([answer for answer, _ in group], self._until)
                except Exception as exc:  # each caller handles it, as if it had published alone
                    error = exc
                for _, done in group:
                    _settle(done, error)
                group = []
        finally:  # cancelled (the loop is closing): nobody is left waiting forever
            for _, done in group + self._ready:
                done.cancel()
            self._ready = []
            self._sending = None


def _settle(done: asyncio.Future[None], error: Exception | None) -> None:
    if done.done():  # its caller was cancelled: the publish went on all the same
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(error)
