"""Grouping compatible requests into engine batches, and committing offsets in order.

Both are pure bookkeeping with direct unit tests; the worker only calls them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")


def group_batches(
    items: Sequence[T],
    key: Callable[[T], Hashable],
    size: Callable[[T], int],
    max_images: int,
) -> list[list[T]]:
    """Group items with equal keys, in arrival order, into batches of at most `max_images` images.

    An item larger than `max_images` on its own still forms a batch (it is never split: all images
    of a request come from one call). Batches are ordered by their first item's arrival.
    """
    open_batches: dict[Hashable, tuple[list[T], int]] = {}
    closed: list[tuple[int, list[T]]] = []
    first_seen: dict[int, int] = {}
    for position, item in enumerate(items):
        k, n = key(item), size(item)
        batch, images = open_batches.get(k, ([], 0))
        if batch and images + n > max_images:
            closed.append((first_seen[id(batch)], batch))
            batch, images = [], 0
        if not batch:
            first_seen[id(batch)] = position
        batch.append(item)
        open_batches[k] = (batch, images + n)
    closed.extend((first_seen[id(b)], b) for b, _ in open_batches.values())
    return [batch for _, batch in sorted(closed, key=lambda pair: pair[0])]


class OffsetTracker:
    """Offsets of one partition in flight; commits only up to the lowest unfinished one.

    With several batches in flight, batch k+1 may finish before batch k: its offsets are done but
    must not be committed until everything below them is done too.
    """

    def __init__(self) -> None:
        self._pending: dict[int, bool] = {}  # offset -> done, in arrival (= offset) order
        self._committed: int | None = None

    def add(self, offset: int) -> None:
        self._pending[offset] = False

    def done(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            if offset in self._pending:
                self._pending[offset] = True

    def committable(self) -> int | None:
        """The next offset to commit (Kafka commits 'next to read'), or None if nothing new."""
        position = None
        for offset, done in list(self._pending.items()):
            if not done:
                break
            position = offset + 1
            del self._pending[offset]
        if position is None or position == self._committed:
            return None
        self._committed = position
        return position

    def __len__(self) -> int:
        return len(self._pending)
