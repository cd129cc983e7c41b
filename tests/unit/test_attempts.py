"""The crash-loop guard's bookkeeping (consumer/attempts.py) on a local store: markers, counts,
and the preflight that writes a starting request's marker beside its lookups."""

from __future__ import annotations

from pathlib import Path

from consumer.attempts import AttemptLog
from consumer.engine import GenerationJob
from storage import LocalImageStore, StorageError


def job(request_id: str = "r-1") -> GenerationJob:
    return GenerationJob(request_id, "p", "n", "standard", "m", 64, 64, 1, 0.0, (1,))


def log_on(tmp_path: Path, max_attempts: int = 3) -> tuple[AttemptLog, LocalImageStore]:
    store = LocalImageStore(tmp_path)
    return AttemptLog(store, "images", max_attempts, reuse_stored=True), store


async def test_preflight_counts_earlier_attempts_and_records_this_one_when_starting_now(
    tmp_path: Path,
) -> None:
    attempts, store = log_on(tmp_path)
    earlier = [attempts.record("r-1"), attempts.record("r-1")]
    check = await attempts.preflight(job(), start_now=True)
    assert (check.attempts, check.stored, check.marked) == (2, None, True)
    keys = store.keys_in("images/_attempts/r-1", 10)
    assert len(keys) == 3 and set(check.markers) == set(keys) and set(earlier) < set(keys)
    attempts.clear(check.markers)
    assert store.keys_in("images/_attempts/r-1", 10) == []


async def test_preflight_of_a_queued_request_records_nothing(tmp_path: Path) -> None:
    attempts, store = log_on(tmp_path)
    check = await attempts.preflight(job(), start_now=False)
    assert (check.attempts, check.markers, check.marked) == (0, (), False)
    assert store.keys_in("images/_attempts/r-1", 10) == []


async def test_markers_are_kept_apart_per_request_and_ordered_by_time(tmp_path: Path) -> None:
    attempts, _ = log_on(tmp_path)
    first, second = attempts.record("r-1"), attempts.record("r-1")
    assert first is not None and second is not None and first < second
    assert (await attempts.preflight(job("r-10"))).attempts == 0  # not r-1's folder


async def test_no_guard_records_and_counts_nothing(tmp_path: Path) -> None:
    attempts, _ = log_on(tmp_path, max_attempts=0)
    assert attempts.record("r-1") is None
    check = await attempts.preflight(job(), start_now=True)
    assert (check.attempts, check.markers) == (0, ())
    assert not (tmp_path / "images" / "_attempts").exists()


async def test_a_store_that_fails_costs_the_check_not_the_request(tmp_path: Path) -> None:
    class Failing(LocalImageStore):
        def keys_in(self, folder: str, limit: int) -> list[str]:
            raise StorageError("store away", retryable=True)

    attempts = AttemptLog(Failing(tmp_path), "images", 3, reuse_stored=True)
    check = await attempts.preflight(job(), start_now=True)
    assert check.attempts == 0 and check.stored is None and len(check.markers) == 1
