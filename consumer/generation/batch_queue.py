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


class BatchQueue(Generic[T]):
    """Batches waiting for an engine slot, oldest first.

    `pop` prefers the oldest batch for a model that is already loaded, since switching models
    costs a load (seconds to minutes, and with MAX_MODELS_CACHE=1 an eviction too); but the oldest
    batch is never passed over more than `max_skips` times, so no request starves.
    """

    def __init__(self, model_of: Callable[[list[T]], str], max_skips: int = 3) -> None:
        self._model_of = model_of
        self._max_skips = max_skips
        self._batches: deque[list[T]] = deque()
        self._skips = 0  # times the current oldest batch was passed over

    def extend(self, batches: Iterable[list[T]]) -> None:
        self._batches.extend(batches)

    def peek(self, loaded: Collection[str]) -> list[T]:
        """The batch `pop` would return."""
        return self._batches[self._choose(loaded)]

    def pop(self, loaded: Collection[str]) -> list[T]:
        index = self._choose(loaded)
        self._skips = self._skips + 1 if index else 0
        batch = self._batches[index]
        del self._batches[index]
        return batch

    def _choose(self, loaded: Collection[str]) -> int:
        if self._skips < self._max_skips:
            for index, batch in enumerate(self._batches):
                if self._model_of(batch) in loaded:
                    return index
        return 0

    def take_if(self, predicate: Callable[[list[T]], bool]) -> list[list[T]]:
        """Remove and return the batches matching `predicate` (a revoked partition's work)."""
        taken = [b for b in self._batches if predicate(b)]
        if taken and any(self._batches[0] is t for t in taken):
            self._skips = 0
        self._batches = deque(b for b in self._batches if not any(b is t for t in taken))
        return taken

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[list[T]]:
        return iter(self._batches)
