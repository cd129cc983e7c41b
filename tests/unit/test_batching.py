from __future__ import annotations

from consumer.generation.batch_queue import BatchQueue, group_batches


def batches(items: list[tuple[str, int]], max_images: int) -> list[list[str]]:
    named = [(f"{k}{i}", k, n) for i, (k, n) in enumerate(items)]
    grouped = group_batches(named, key=lambda t: t[1], size=lambda t: t[2], max_images=max_images)
    return [[name for name, _, _ in batch] for batch in grouped]


def test_compatible_requests_share_a_batch_in_arrival_order() -> None:
    assert batches([("a", 1), ("b", 1), ("a", 1), ("a", 1)], 4) == [["a0", "a2", "a3"], ["b1"]]


def test_batches_are_capped_by_images_not_requests() -> None:
    assert batches([("a", 2), ("a", 2), ("a", 1)], 4) == [["a0", "a1"], ["a2"]]
    assert batches([("a", 1)] * 5, 2) == [["a0", "a1"], ["a2", "a3"], ["a4"]]


def test_size_one_turns_batching_off() -> None:
    assert batches([("a", 1), ("a", 1)], 1) == [["a0"], ["a1"]]


def test_a_request_larger_than_the_cap_runs_alone() -> None:
    assert batches([("a", 1), ("a", 8), ("a", 1)], 4) == [["a0"], ["a1"], ["a2"]]


def test_empty() -> None:
    assert batches([], 4) == []


def test_batches_are_capped_by_cost() -> None:
    items = [("k", 1, 300.0), ("k", 1, 300.0), ("k", 1, 100.0), ("k", 1, 100.0)]
    got = group_batches(
        items,
        key=lambda i: i[0],
        size=lambda i: i[1],
        max_images=8,
        cost=lambda i: i[2],
        max_cost=500.0,
    )
    assert [[c for _, _, c in b] for b in got] == [[300.0], [300.0, 100.0, 100.0]]


def queue_of(*models: str) -> BatchQueue[str]:
    queue: BatchQueue[str] = BatchQueue(model_of=lambda batch: batch[0], max_skips=2)
    queue.extend([m] for m in models)
    return queue


def test_the_queue_prefers_the_loaded_model() -> None:
    queue = queue_of("a", "b", "a", "b")
    order = [queue.pop(loaded={"b"})[0] for _ in range(2)]
    assert order == ["b", "b"]  # both b batches first: one model switch instead of three
    assert [queue.pop(loaded={"b"})[0] for _ in range(2)] == ["a", "a"]


def test_the_oldest_batch_is_passed_over_at_most_max_skips_times() -> None:
    queue = queue_of("a", "b", "b", "b", "b")
    popped = [queue.pop(loaded={"b"})[0] for _ in range(5)]
    assert popped == ["b", "b", "a", "b", "b"]  # "a" waited for two batches, not four


def test_without_a_loaded_match_the_oldest_goes_first() -> None:
    queue = queue_of("a", "b")
    assert queue.pop(loaded=set())[0] == "a"


def test_take_if_removes_the_batches_of_revoked_partitions() -> None:
    queue = queue_of("a", "b", "a")
    assert queue.take_if(lambda batch: batch[0] == "a") == [["a"], ["a"]]
    assert list(queue) == [["b"]] and len(queue) == 1
