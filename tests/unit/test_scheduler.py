"""The scheduler's bookkeeping (consumer/generation/scheduler.py): room to fetch, what it holds,
and a suspect batch that starts alone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import ConsumerRecord, TopicPartition

from consumer.generation.engine import GenerationJob
from consumer.generation.scheduler import Scheduler
from consumer.requests.triage import Work


def work(request_id: str, partition: int = 0, attempts: int = 0) -> Work:
    record: Any = ConsumerRecord(
        "requests",
        partition,
        0,
        0,
        0,
        None,
        b"",
        None,
        0,
        0,
        [],  # type: ignore[arg-type]
    )
    job = GenerationJob(request_id, "p", "", "standard", "m", 64, 64, 1, 0.0, (1,))
    return Work(record, job, attempts=attempts)


def never_ending(started: list[str]) -> Callable[[list[Work]], Any]:
    def run(batch: list[Work]) -> Any:
        async def forever(stored: Callable[[], None]) -> None:
            started.extend(w.job.request_id for w in batch)
            await asyncio.Event().wait()

        return forever

    return run


async def test_room_counts_free_slots_and_the_lookahead() -> None:
    scheduler = Scheduler(slots=2, lookahead=1, loaded_models=list)
    assert scheduler.room() == 3 and not scheduler.in_flight and not scheduler.pending
    scheduler.add([[work("a")], [work("b")]])
    assert scheduler.room() == 1 and scheduler.holds("a") and not scheduler.holds("z")


async def test_a_suspect_starts_only_with_nothing_in_flight_and_nothing_beside_it() -> None:
    started: list[str] = []
    scheduler = Scheduler(slots=2, lookahead=0, loaded_models=list)
    scheduler.add([[work("a")], [work("suspect", attempts=1)], [work("c")]])
    scheduler.start_ready(never_ending(started))
    await asyncio.sleep(0)
    assert started == ["a"]  # the suspect waits for an empty flight
    scheduler.in_flight.cancel()
    await scheduler.in_flight.wait(1.0)
    scheduler.start_ready(never_ending(started))
    await asyncio.sleep(0)
    assert started == ["a", "suspect"]  # alone: "c" waits although a slot is free
    scheduler.in_flight.cancel()
    await scheduler.in_flight.wait(1.0)


async def test_waiting_batches_of_revoked_partitions_are_taken_back() -> None:
    scheduler = Scheduler(slots=1, lookahead=2, loaded_models=list)
    scheduler.add([[work("a", partition=0)], [work("b", partition=1)]])
    taken = scheduler.drop_waiting({TopicPartition("requests", 1)})
    assert [[w.job.request_id for w in batch] for batch in taken] == [["b"]]
    assert [[w.job.request_id for w in b] for b in scheduler.drop_waiting()] == [["a"]]
