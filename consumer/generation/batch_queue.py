"""Grouping compatible requests into engine batches, and choosing which batch runs next: pure
bookkeeping with direct unit tests.

(The offsets to commit are tracked with the acknowledgement code, in acks.py.)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


def group_batches(
    items: Sequence[T],
    key: Callable[[T], Hashable],
    size: Callable[[T], int],
    max_images: int,
    cost: Callable[[T], float] = lambda _: 0.0,
    max_cost: float = 0.0,
) -> list[list[T]]:
    """Group items with equal keys, in arrival order, into batches of at most `max_images` images
    and at most `max_cost` cost (0: no cost bound).

    An item over either bound on its own still forms a batch (it is never split: all images of a
    request come from one call). Batches are ordered by their first item's arrival.
    """
    open_batches: dict[Hashable, tuple[list[T], int, float]] = {}
    closed: list[tuple[int, list[T]]] = []
    first_seen: dict[int, int] = {}
    for position, item in enumerate(items):
        k, n, c = key(item), size(item), cost(item)
        batch, images, spent = open_batches.get(k, ([], 0, 0.0))
        if batch and (images + n > max_images or (max_cost and spent + c > max_cost)):
            closed.append((first_seen[id(batch)], batch))
            batch, images, spent = [], 0, 0.0
        if not batch:
            first_seen[id(batch)] = position
        batch.append(item)
        open_batches[k] = (batch, images + n, spent + c)
    closed.extend((first_seen[id(b)], b) for b, _, _ in open_batches.values())
    return [batch for _, batch in sorted(closed, key=lambda pair: pair[0])]


class _Lane(Generic[T]):
    """One lane's batches, oldest first, and how often its oldest was passed over."""

    def __init__(self) -> None:
        self.batches: deque[list[T]] = deque()
        self.skips = 0


class BatchQueue(Generic[T]):
    """Batches waiting for an engine slot, in two lanes: every urgent batch (PRIORITY_TOPIC's,
    `urgent`) goes before every other one, whatever their arrival; within a lane, oldest first.

    `pop` prefers, within the lane it takes from, the oldest batch for a model that is already
    loaded, since switching models costs a load (seconds to minutes, and with MAX_MODELS_CACHE=1
    an eviction too); but a lane's oldest batch is never passed over more than `max_skips` times,
    so no request starves within its lane. (A steady stream of urgent work does hold the other
    lane back: that is what the priority lane is for.)
    """

    def __init__(
        self,
        model_of: Callable[[list[T]], str],
        max_skips: int = 3,
        urgent: Callable[[list[T]], bool] = lambda _: False,
    ) -> None:
        self._model_of = model_of
        self._max_skips = max_skips
        self._urgent_of = urgent
        self._urgent: _Lane[T] = _Lane()
        self._regular: _Lane[T] = _Lane()

    def extend(self, batches: Iterable[list[T]]) -> None:
        for batch in batches:
            lane = self._urgent if self._urgent_of(batch) else self._regular
            lane.batches.append(batch)

    @property
    def urgent(self) -> int:
        """Urgent batches waiting."""
        return len(self._urgent.batches)

    def peek(self, loaded: Collection[str]) -> list[T]:
        """The batch `pop` would return."""
        lane = self._lane()
        return lane.batches[self._choose(lane, loaded)]

    def pop(self, loaded: Collection[str]) -> list[T]:
        lane = self._lane()
        index = self._choose(lane, loaded)
        lane.skips = lane.skips + 1 if index else 0
        batch = lane.batches[index]
        del lane.batches[index]
        return batch

    def _lane(self) -> _Lane[T]:
        return self._urgent if self._urgent.batches else self._regular

    def _choose(self, lane: _Lane[T], loaded: Collection[str]) -> int:
        if lane.skips < self._max_skips:
            for index, batch in enumerate(lane.batches):
                if self._model_of(batch) in loaded:
                    return index
        return 0

    def take_if(self, predicate: Callable[[list[T]], bool]) -> list[list[T]]:
        """Remove and return the batches matching `predicate` (a revoked partition's work)."""
        taken = []
        for lane in (self._urgent, self._regular):
            mine = [b for b in lane.batches if predicate(b)]
            if mine and any(lane.batches[0] is t for t in mine):
                lane.skips = 0
            lane.batches = deque(b for b in lane.batches if not any(b is t for t in mine))
            taken += mine
        return taken

    def __len__(self) -> int:
        return len(self._urgent.batches) + len(self._regular.batches)

    def __iter__(self) -> Iterator[list[T]]:
        """Urgent batches first, each lane oldest first: the order they would start in, model
        preferences aside."""
        return iter([*self._urgent.batches, *self._regular.batches])
