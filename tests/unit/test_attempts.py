"""The crash-loop guard's bookkeeping (consumer/requests/attempts.py) on a local store: markers,
counts, and the preflight that writes a starting request's marker beside its lookups."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from consumer.generation.engine import GenerationJob, JobOutput
from consumer.output.images import encode_output, store_output
from consumer.requests.attempts import AttemptLog
from consumer.requests.decision import Stored
from storage import LocalImageStore, StorageError


def job(request_id: str = "r-1") -> GenerationJob:
    return GenerationJob(request_id, "p", "n", "standard", "m", 64, 64, 1, 0.0, (1,))


def log_on(tmp_path: Path, max_attempts: int = 3) -> tuple[AttemptLog, LocalImageStore]:
    store = LocalImageStore(tmp_path)
    return AttemptLog(store, "images", max_attempts), store


async def test_preflight_counts_earlier_attempts_and_records_this_one_when_starting_now(
    tmp_path: Path,
) -> None:
    attempts, _ = log_on(tmp_path)
    earlier = [attempts.record("r-1"), attempts.record("r-1")]
    check = await attempts.preflight(job(), start_now=True)
    assert (check.attempts, check.stored, check.marked) == (2, Stored.NOTHING, True)
    keys = attempts.markers("r-1")
    assert len(keys) == 3 and set(check.markers) == set(keys) and set(earlier) < set(keys)
    attempts.clear(check.markers)
    assert attempts.markers("r-1") == []


async def test_preflight_of_a_queued_request_records_nothing(tmp_path: Path) -> None:
    attempts, _ = log_on(tmp_path)
    check = await attempts.preflight(job(), start_now=False)
    assert (check.attempts, check.markers, check.marked) == (0, (), False)
    assert attempts.markers("r-1") == []


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
    assert not (tmp_path / "images").exists()


async def test_a_store_that_fails_costs_the_check_not_the_request(tmp_path: Path) -> None:
    class Failing(LocalImageStore):
        def keys_in(self, folder: str, limit: int) -> list[str]:
            raise StorageError("store away", retryable=True)

    attempts = AttemptLog(Failing(tmp_path), "images", 3)
    check = await attempts.preflight(job(), start_now=True)
    assert check.attempts == 0 and check.stored is Stored.UNKNOWN and len(check.markers) == 1


async def test_one_listing_finds_stored_images_and_markers_side_by_side(tmp_path: Path) -> None:
    """Markers live beside the request's images; images are never counted as attempts, and a
    request whose images are all stored for its parameters is answered from the store."""
    attempts, store = log_on(tmp_path)
    planned = job()
    earlier = attempts.record("r-1")
    check = await attempts.preflight(planned)
    assert (check.attempts, check.stored, check.markers) == (1, Stored.NOTHING, (earlier,))
    output = JobOutput(planned, [Image.new("RGB", (64, 64))], 0.5)
    store_output(output, encode_output(output), store, "images")
    assert store.keys_in("images/r-1", 10) == ["images/r-1/0.png", earlier]
    check = await attempts.preflight(planned, start_now=True)
    assert check.stored is Stored.SAME
    assert check.answer is not None and check.answer.status == "completed"
    assert check.attempts == 0 and len(check.markers) == 2  # cleared once it is answered


async def test_a_missing_image_costs_no_head(tmp_path: Path) -> None:
    """The listing already says the images are not there: no HEAD per image."""

    class NoHeads(LocalImageStore):
        def head(self, key: str) -> dict[str, str] | None:
            raise AssertionError(f"HEAD {key}")

    attempts = AttemptLog(NoHeads(tmp_path), "images", 3)
    assert attempts.record("r-1") is not None
    check = await attempts.preflight(job())
    assert (check.attempts, check.stored) == (1, Stored.NOTHING)


async def test_images_stored_for_other_parameters_are_a_conflict_and_their_markers_not_ours(
    tmp_path: Path,
) -> None:
    """The request_id was used for another request: its folder's markers are that request's
    evidence, and none of its objects is touched."""
    attempts, store = log_on(tmp_path)
    other = job()
    output = JobOutput(other, [Image.new("RGB", (64, 64))], 0.5)
    store_output(output, encode_output(output), store, "images")
    theirs = attempts.record("r-1")
    reused = GenerationJob("r-1", "another prompt", "n", "standard", "m", 64, 64, 1, 0.0, (1,))
    check = await attempts.preflight(reused)
    assert (check.stored, check.answer, check.attempts, check.markers) == (
        Stored.OTHER,
        None,
        0,
        (),
    )
    assert theirs in attempts.markers("r-1")


async def test_a_lookup_that_fails_for_a_passing_reason_is_tried_again(tmp_path: Path) -> None:
    """boto3 does not retry (the worker owns retries): a blip costs a second try, not the check."""

    class Blip(LocalImageStore):
        failures = 2

        def keys_in(self, folder: str, limit: int) -> list[str]:
            if self.failures:
                self.failures -= 1
                raise StorageError("connection reset", retryable=True)
            return super().keys_in(folder, limit)

    store = Blip(tmp_path)
    attempts = AttemptLog(store, "images", 3)
    earlier = attempts.record("r-1")
    check = await attempts.preflight(job())
    assert (check.stored, check.attempts, check.markers) == (Stored.NOTHING, 1, (earlier,))
    assert store.failures == 0
