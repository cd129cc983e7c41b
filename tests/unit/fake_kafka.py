"""An in-memory broker, consumer and producer with the slice of aiokafka's API the worker uses.

Enough to drive the worker's intake and acknowledgement code through rebalances and publish
failures deterministically: the test decides when a rebalance happens and which sends fail.
Semantics follow aiokafka 0.14 where they matter: a new assignment starts unpaused, at the
committed offset; a commit for a partition this member does not own fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError


class FakeBroker:
    def __init__(self) -> None:
        self.logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        self.committed: dict[TopicPartition, int] = {}

    def append(
        self,
        topic: str,
        partition: int,
        value: bytes | None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
        timestamp: int | None = None,
    ) -> ConsumerRecord[bytes, bytes]:
        """`timestamp`: the record's CreateTime in ms (default: now)."""
        tp = TopicPartition(topic, partition)
        log = self.logs.setdefault(tp, [])
        record = ConsumerRecord(
            topic=topic,
            partition=partition,
            offset=len(log),
            timestamp=int(time.time() * 1000) if timestamp is None else timestamp,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value or b""),
            headers=tuple(headers or ()),
        )
        log.append(record)
        return record

    def values(self, topic: str) -> list[bytes | None]:
        return [r.value for tp, log in sorted(self.logs.items()) if tp.topic == topic for r in log]

    def end(self, tp: TopicPartition) -> int:
        return len(self.logs.get(tp, []))


class FakeConsumer:
    def __init__(self, broker: FakeBroker, initial: set[TopicPartition]) -> None:
        self._broker = broker
        self._initial = initial
        self._assigned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._listener: Any = None
        self.ignore_pause_of_new = False  # the race: records of a new assignment already fetched
        self._rebalance_in_poll: set[TopicPartition] | None = None
        self.polls = 0
        self.started_at: float | None = None  # when the worker joined the group

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._listener = listener

    async def start(self) -> None:
        self.started_at = time.monotonic()
        await self._assign(self._initial)

    async def stop(self) -> None:
        self._assigned = set()

    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._paused |= set(tps) & self._assigned

    def resume(self, *tps: TopicPartition) -> None:
        self._paused -= set(tps)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    def highwater(self, tp: TopicPartition) -> int:
        return self._broker.end(tp)

    async def committed(self, tp: TopicPartition) -> int | None:
        return self._broker.committed.get(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not set(offsets) <= self._assigned:
            raise CommitFailedError("not the owner")
        self._broker.committed.update(offsets)

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        """`partitions`: only these (none: every assigned partition not paused)."""
        self.polls += 1
        if self._rebalance_in_poll is not None:  # as aiokafka does: a rebalance inside a poll
            assignment, self._rebalance_in_poll = self._rebalance_in_poll, None
            await self.rebalance(assignment)
        got: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
        budget = max_records if max_records is not None else 1_000_000
        for tp in sorted((self._assigned - self._paused) & set(partitions or self._assigned)):
            log = self._broker.logs.get(tp, [])
            position = self._positions[tp]
            records = log[position : position + budget]
            if records:
                got[tp] = records
                self._positions[tp] = position + len(records)
                budget -= len(records)
        if not got:
            await asyncio.sleep(min(timeout_ms / 1000, 0.02))
        return got

    def rebalance_during_next_poll(self, assignment: set[TopicPartition]) -> None:
        self._rebalance_in_poll = assignment

    async def rebalance(self, assignment: set[TopicPartition]) -> None:
        """Revoke everything (an eager rebalance), then assign `assignment`."""
        await self._listener.on_partitions_revoked(set(self._assigned))  # still owned meanwhile
        self._assigned = set()
        await self._assign(assignment)

    async def _assign(self, assignment: set[TopicPartition]) -> None:
        self._assigned = set(assignment)
        self._paused = set()  # aiokafka 0.14: a new assignment starts unpaused
        self._positions = {tp: self._broker.committed.get(tp, 0) for tp in assignment}
        await self._listener.on_partitions_assigned(set(assignment))
        if self.ignore_pause_of_new:
            self._paused = set()


SendFailure = Callable[[str, bytes | None], BaseException | None]


class FakeProducer:
    """`fail(topic, value)` may return an exception for a send: raised at once when it is a
    local refusal (as aiokafka does for a record over max_request_size), else set on the
    delivery future (a broker's answer)."""

    def __init__(self, broker: FakeBroker, fail: SendFailure | None = None) -> None:
        self._broker = broker
        self.fail: SendFailure = fail or (lambda topic, value: None)
        self.attempts = 0

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[None]:
        self.attempts += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        error = self.fail(topic, value)
        if error is not None and getattr(error, "local", False):
            raise error
        if error is not None:
            future.set_exception(error)
        else:
            self._broker.append(topic, 0, value, key, headers)
            future.set_result(None)
        return future

    async def stop(self) -> None:
        pass
