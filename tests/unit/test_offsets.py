"""OffsetTracker: what may be committed, across batches finishing out of order and rebalances."""

from __future__ import annotations

from consumer.intake.offsets import OffsetTracker


def tracker_with(*offsets: int) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        assert tracker.take(offset)
    return tracker


def test_offsets_commit_only_below_the_lowest_unfinished() -> None:
    tracker = tracker_with(10, 11, 12, 13)
    tracker.done([12, 13])
    assert tracker.committable() is None  # 10 and 11 are still running
    tracker.done([10])
    assert tracker.committable() == 11
    assert tracker.committable() is None  # nothing new
    tracker.done([11])
    assert tracker.committable() == 14
    assert tracker.in_flight == 0 and tracker.idle


def test_offsets_with_gaps_from_compaction_or_transactions() -> None:
    tracker = tracker_with(5, 9)
    tracker.done([9])
    assert tracker.committable() is None
    tracker.done([5])
    assert tracker.committable() == 10


def test_a_record_fetched_again_while_taken_or_done_is_not_taken_twice() -> None:
    tracker = tracker_with(3, 4)
    tracker.done([4])
    assert not tracker.take(3)  # still running here: a re-fetch after a rebalance
    assert not tracker.take(4)  # finished, result published, commit pending on 3
    assert tracker.in_flight == 1


def test_released_work_blocks_commits_until_it_is_taken_again_and_done() -> None:
    tracker = tracker_with(0, 1, 2)
    tracker.release([0])  # dropped before it started (revoked while pending)
    tracker.done([1, 2])
    assert tracker.committable() is None  # never skip past released work
    assert tracker.in_flight == 0
    assert tracker.take(0)  # fetched again after the partition came back
    tracker.done([0])
    assert tracker.committable() == 3


def test_forget_below_drops_what_another_member_committed() -> None:
    tracker = tracker_with(0, 1, 2)
    tracker.done([2])
    tracker.forget_below(2)  # another member committed up to 2 meanwhile
    assert tracker.in_flight == 0
    assert tracker.committable() == 3


def test_a_committed_record_fetched_again_is_not_taken() -> None:
    tracker = tracker_with(0, 1)
    tracker.done([0, 1])
    assert tracker.committable() == 2
    assert not tracker.take(0) and not tracker.take(1)  # the position went back after a rebalance
    assert tracker.take(2)


def test_forget_below_reports_a_position_the_group_never_got() -> None:
    tracker = tracker_with(0, 1)
    tracker.done([0, 1])
    assert tracker.committable() == 2  # ... but that commit was refused (a rebalance)
    assert tracker.forget_below(0) == 2  # the partition came back: commit 2 again
    assert tracker.forget_below(5) is None  # another member went further: nothing to redo
