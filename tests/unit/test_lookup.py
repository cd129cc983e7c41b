"""The store lookup before a request that may have run before (consumer/requests/lookup.py), on
a local store: one listing, a HEAD per image only when there is one, tried again after a blip."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from consumer.generation.engine import GenerationJob, JobOutput
from consumer.output.images import encode_output, store_output
from consumer.requests.decision import Stored
from consumer.requests.lookup import StoreLookup
from storage import LocalImageStore, StorageError


def job(request_id: str = "r-1", prompt: str = "p") -> GenerationJob:
    return GenerationJob(request_id, prompt, "n", "standard", "m", 64, 64, 1, 0.0, (1,))


def stored(store: LocalImageStore, planned: GenerationJob) -> None:
    output = JobOutput(planned, [Image.new("RGB", (64, 64))], 0.5)
    store_output(output, encode_output(output), store, "images")


async def test_nothing_stored_is_nothing(tmp_path: Path) -> None:
    found = await StoreLookup(LocalImageStore(tmp_path), "images")(job())
    assert (found.stored, found.answer) == (Stored.NOTHING, None)


async def test_images_stored_for_the_same_parameters_are_the_answer(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    stored(store, job())
    found = await StoreLookup(store, "images")(job())
    assert found.stored is Stored.SAME
    assert found.answer is not None and found.answer.status == "completed"
    assert (await StoreLookup(store, "images")(job("r-10"))).stored is Stored.NOTHING


async def test_images_stored_for_other_parameters_are_a_conflict(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    stored(store, job())
    found = await StoreLookup(store, "images")(job(prompt="another prompt"))
    assert (found.stored, found.answer) == (Stored.OTHER, None)


async def test_a_missing_image_costs_no_head(tmp_path: Path) -> None:
    """The listing already says the images are not there: no HEAD per image."""

    class NoHeads(LocalImageStore):
        def head(self, key: str) -> dict[str, str] | None:
            raise AssertionError(f"HEAD {key}")

    store = NoHeads(tmp_path)
    store.put("images/r-1/notes.json", b"{}", "application/json")  # not an image
    assert (await StoreLookup(store, "images")(job())).stored is Stored.NOTHING


async def test_a_store_that_fails_costs_the_check_not_the_request(tmp_path: Path) -> None:
    class Failing(LocalImageStore):
        def keys_in(self, folder: str, limit: int) -> list[str]:
            raise StorageError("store away", retryable=True)

    found = await StoreLookup(Failing(tmp_path), "images")(job())
    assert found.stored is Stored.UNKNOWN


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
    stored(store, job())
    assert (await StoreLookup(store, "images")(job())).stored is Stored.SAME
    assert store.failures == 0
