"""Answers that are ready at about the same moment leave together: one send, one commit.

A batch's requests are published as each one's images are stored, and on a busy worker the
results of several batches become ready within a few milliseconds. Published one by one, each
paid for its own send, wait and commit on the event loop (a fifth of the worker's CPU on a backlog
of fast requests). Here the first answer ready is sent at once; those that become ready while a
send (and, up to COMMIT_WAIT_SECONDS, its commit) runs wait for it and then go together in the
next one, as Nagle's algorithm does for a socket. Each group's commit runs in a task of its own
(the acknowledger coalesces commits), so a slow commit holds the next results back for at most
COMMIT_WAIT_SECONDS. An idle worker's lone answer waits for nothing.
"""

from __future__ import annotations

import asyncio

from consumer.output.answers import Answer, Answers, Sent

Waiting = list[tuple[Answer, "asyncio.Future[None]"]]

# The next send waits for the group before it to be committed, so that more answers gather for
# it (on a busy worker, waiting for send and commit rather than the send alone halves the sends
# and commits: 0.78-0.89 against 0.94-1.02 ms of CPU a request), but never longer than this: a
# slow commit (a group coordinator moving) must not hold back the results behind it.
COMMIT_WAIT_SECONDS = 0.1


class Outbox:
    def __init__(self, answers: Answers, until: asyncio.Event) -> None:
        """`until`: publishing gives up once it is set while the broker is away (BrokerGaveUp)."""
        self._answers = answers
        self._until = until
        self._ready: Waiting = []
        self._sending: asyncio.Task[None] | None = None
        self._settling: set[asyncio.Task[None]] = set()

    async def publish(self, answer: Answer) -> None:
        """Returns once `answer` is published and committed; raises what its publish raised
        (publishing.BrokerGaveUp, Unpublishable). Cancelling the caller does not interrupt the
        publish: it runs in tasks of its own, between send and commit."""
        done = asyncio.get_running_loop().create_future()
        self._ready.append((answer, done))
        if self._sending is None:
            self._sending = asyncio.create_task(self._send_ready())
        await done

    async def _send_ready(self) -> None:
        group: Waiting = []
        try:
            while self._ready:
                group, self._ready = self._ready, []
                try:
                    sent = await self._answers.send([answer for answer, _ in group], self._until)
                except Exception as exc:  # each caller handles it, as if it had published alone
                    _settle(group, exc)
                else:
                    task = asyncio.create_task(self._commit(sent, group))
                    self._settling.add(task)
                    task.add_done_callback(self._settling.discard)
                    group = []  # the commit task's now
                    await asyncio.wait({task}, timeout=COMMIT_WAIT_SECONDS)
        finally:  # cancelled (the loop is closing): nobody is left waiting forever
            _cancel(group + self._ready)
            self._ready = []
            self._sending = None

    async def _commit(self, sent: Sent, group: Waiting) -> None:
        try:
            await self._answers.settle(sent, self._until)
        except Exception as exc:
            _settle(group, exc)
        else:
            _settle(group, None)
        finally:
            _cancel(group)


def _settle(group: Waiting, error: Exception | None) -> None:
    for _, done in group:
        if done.done():  # its caller was cancelled: the publish went on all the same
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


def _cancel(group: Waiting) -> None:
    for _, done in group:
        if not done.done():
            done.cancel()
