"""Grouping compatible requests into engine batches: pure bookkeeping with direct unit tests.

(The offsets to commit are tracked with the acknowledgement code, in acks.py.)
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

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
