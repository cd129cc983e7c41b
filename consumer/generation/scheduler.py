"""Which batch starts next, and when: the batches waiting (BatchQueue) and those in flight
(InFlight), as one part the worker's intake loop asks.

Capacity first (Temporal's way): the worker fetches only as many batches as there are free
engine slots plus BATCH_LOOKAHEAD waiting, so that the next batch can be chosen for the model
already loaded. A suspect batch (attempts.py) starts only with nothing else in flight, and nothing
starts beside it. The engine thread runs batches in the order they start, so the model of the
batch started last is the one it will have loaded next.

Two lanes (intake/lanes.py): urgent batches (PRIORITY_TOPIC's) start before every other batch
waiting, and have room of their own: the worker takes urgent work while the other lane is paused,
up to a free slot each plus the lookahead, counting urgent batches waiting only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiokafka import TopicPartition

from consumer.generation.batch_queue import BatchQueue
from consumer.generation.inflight import BatchRun, InFlight
from consumer.requests.triage import Work


class Scheduler:
    def __init__(
        self,
        slots: int,
        lookahead: int,
        loaded_models: Callable[[], list[str]],
        urgent: Callable[[list[Work]], bool] = lambda _: False,
    ) -> None:
        """`urgent(batch)`: the batch is priority work (a batch never mixes lanes)."""
        self.pending: BatchQueue[Work] = BatchQueue(
            model_of=lambda batch: batch[0].job.model, urgent=urgent
        )
        self.in_flight = InFlight(slots)
        self._lookahead = lookahead
        self._loaded_models = loaded_models  # what the engine has loaded now
        self._last_model: str | None = None  # of the batch started last

    def room(self) -> int:
        """Batches to fetch: a free engine slot each, plus the lookahead waiting."""
        return self.in_flight.free_slots + self._lookahead - len(self.pending)

    def urgent_room(self) -> int:
        """Urgent batches to fetch: as `room`, but only urgent batches waiting count (they go
        before the others), so it is at least `room`."""
        return self.in_flight.free_slots + self._lookahead - self.pending.urgent

    def add(self, batches: Iterable[list[Work]]) -> None:
        self.pending.extend(batches)

    def start_ready(self, run: Callable[[list[Work]], BatchRun]) -> None:
        """Fill the free slots with waiting batches (`run(batch)` runs one)."""
        while self.pending and self.in_flight.free_slots > 0:
            loaded = set(self._loaded_models())
            if self._last_model is not None:
                loaded.add(self._last_model)
            next_exclusive = any(w.exclusive for w in self.pending.peek(loaded))
            if self.in_flight.exclusive or (next_exclusive and self.in_flight):
                return
            batch = self.pending.pop(loaded)
            self._last_model = batch[0].job.model
            self.in_flight.start(batch, run(batch))

    def holds(self, request_id: str) -> bool:
        """The request is waiting or running here."""
        batches = [*self.pending, *self.in_flight.tasks.values()]
        return any(work.job.request_id == request_id for batch in batches for work in batch)

    def drop_waiting(self, partitions: set[TopicPartition] | None = None) -> list[list[Work]]:
        """Take back the batches not started (of `partitions`; None: all): they will be fetched
        again."""
        if partitions is None:
            return self.pending.take_if(lambda _: True)
        return self.pending.take_if(lambda batch: any(w.on(partitions) for w in batch))
