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
