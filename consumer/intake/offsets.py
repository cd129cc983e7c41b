"""Offsets of one partition in flight, and which of them may be committed.

Taken when polled, done when answered, released when dropped before they started (to be taken
again); a commit never goes past an offset that is not done.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class _State(Enum):
    TAKEN = "taken"  # being worked on by this member
    DONE = "done"  # outcome published
    RELEASED = "released"  # dropped before it started; must be taken again before a commit


class OffsetTracker:
    """Offsets of one partition in flight; commits only up to the lowest unfinished one.

    With several batches in flight, batch k+1 may finish before batch k: its offsets are done but
    must not be committed until everything below them is done too.
    """

    def __init__(self) -> None:
        self._states: dict[int, _State] = {}
        self._committed: int | None = None

    def take(self, offset: int) -> bool:
        """False when the offset is already taken, done or committed (a re-fetch after a
        rebalance, which resets the fetch position to the group's committed offset)."""
        if self._committed is not None and offset < self._committed:
            return False
        if self._states.get(offset) in (_State.TAKEN, _State.DONE):
            return False
        self._states[offset] = _State.TAKEN
        return True

    def answered(self, offset: int) -> bool:
        """True once the offset's outcome is published (or committed)."""
        committed = self._committed is not None and offset < self._committed
        return committed or self._states.get(offset) is _State.DONE

    def done(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            if offset in self._states:
                self._states[offset] = _State.DONE

    def release(self, offsets: Iterable[int]) -> None:
        for offset in offsets:
            if self._states.get(offset) is _State.TAKEN:
                self._states[offset] = _State.RELEASED

    def forget_below(self, position: int) -> int | None:
        """The group's committed offset is `position`: what lies below is settled. Returns this
        member's own position when it is further (a commit refused while the partition was
        away, for results already published): the caller commits it again."""
        for offset in [o for o in self._states if o < position]:
            del self._states[offset]
        ahead = (
            self._committed if self._committed is not None and self._committed > position else None
        )
        self._committed = max(self._committed or 0, position)
        return ahead

    def committable(self) -> int | None:
        """The next offset to commit (Kafka commits 'next to read'), or None if nothing new."""
        position = None
        for offset in sorted(self._states):
            if self._states[offset] is not _State.DONE:
                break
            position = offset + 1
            del self._states[offset]
        if position is None or position == self._committed:
            return None
        self._committed = position
        return position

    @property
    def in_flight(self) -> int:
        return sum(state is _State.TAKEN for state in self._states.values())

    @property
    def idle(self) -> bool:
        return self.in_flight == 0
