"""A redelivered request answered from the store: `stored_result` after `store_output`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from consumer.generation.engine import GenerationJob, JobOutput
from consumer.generation.engine.catalog import TINY_MODEL_NOTE
from consumer.output.images import (
    PARAMS_DIGEST_METADATA,
    REQUEST_DIGEST_METADATA,
    STORED_NOTE,
    encode_output,
    image_metadata,
    png_parameters,
    request_digest,
    store_output,
    stored_result,
)
from schemas import GenerationResult
from storage import ImageStore, LocalImageStore, StorageError, image_key, parameters_digest

PREFIX = "images"


def job(seeds: tuple[int, ...] = (7, 8), **changes: object) -> GenerationJob:
    base = GenerationJob("req-1", "a red fox", "blurry", "standard", "m", 64, 64, 1, 0.0, seeds)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def store_job(store: ImageStore, planned: GenerationJob) -> GenerationResult:
    images = [Image.new("RGB", (64, 64), (i, 0, 0)) for i in range(planned.num_images)]
    output = JobOutput(planned, images, 1.25)
    return store_output(output, encode_output(output), store, PREFIX)


class CountingStore(LocalImageStore):
    """A local store that counts reads: answering from the store must not download images."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, base_url="https://cdn.example.com/img")
        self.heads = 0
        self.gets = 0

    def head(self, key: str) -> dict[str, str] | None:
        self.heads += 1
        return super().head(key)

    def get(self, key: str) -> bytes | None:
        self.gets += 1
        return super().get(key)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path)


def test_stored_result_equals_the_generated_one_but_says_so(store: CountingStore) -> None:
    generated = store_job(store, job())
    served = stored_result(job(), store, PREFIX)
    assert served is not None
    assert served.images == generated.images  # same ids, keys, URLs, seeds, sizes
    assert (served.request_id, served.status, served.error) == ("req-1", "completed", None)
    assert generated.audit is not None and served.audit is not None
    assert served.audit.duration_sec == "0.000" != generated.audit.duration_sec
    assert served.audit.note == STORED_NOTE
    assert (served.audit.policy, served.audit.model) == (generated.audit.policy, "m")
    assert (store.heads, store.gets) == (2, 0)  # one HEAD per image, no download


def test_the_model_note_is_kept_after_the_stored_note(store: CountingStore) -> None:
    store_job(store, job(model="tiny-sdxl"))
    served = stored_result(job(model="tiny-sdxl"), store, PREFIX)
    assert served is not None and served.audit is not None
    assert served.audit.note == f"{STORED_NOTE}; {TINY_MODEL_NOTE}"


@pytest.mark.parametrize(
    "changes",
    [
        {"prompt": "a blue fox"},  # the same request_id reused for another request
        {"negative_prompt": "sharp"},
        {"seeds": (9, 10)},
        {"width": 128},
        {"steps": 2},
        {"cfg": 1.5},
        {"model": "other"},
    ],
)
def test_other_parameters_under_the_same_id_are_not_served(
    store: CountingStore, changes: dict[str, object]
) -> None:
    store_job(store, job())
    assert stored_result(job(**changes), store, PREFIX) is None


def test_a_missing_image_is_not_served(store: CountingStore) -> None:
    store_job(store, job(seeds=(7,)))
    assert stored_result(job(seeds=(7, 8)), store, PREFIX) is None  # image 1 was never stored
    store_job(store, job())
    store.delete(image_key(PREFIX, "req-1", 1))
    assert stored_result(job(), store, PREFIX) is None
    assert stored_result(job(), store, "elsewhere") is None


def test_an_image_of_an_interrupted_redelivery_is_not_served(store: CountingStore) -> None:
    store_job(store, job(prompt="old"))
    # The redelivery with new parameters crashed after image 0: image 1 still holds the old one.
    store_job(store, job(seeds=(7,)))
    assert stored_result(job(), store, PREFIX) is None


def test_objects_without_metadata_are_not_served(store: CountingStore) -> None:
    """Objects written before this metadata existed: unverifiable, so generated again."""
    for index in range(2):
        store.put(image_key(PREFIX, "req-1", index), b"png")
    assert stored_result(job(), store, PREFIX) is None


def test_metadata_is_the_digest_of_the_png_parameters(store: CountingStore) -> None:
    planned = job()
    store_job(store, planned)
    output = JobOutput(planned, [], 0.0)
    for index in range(2):
        digest = parameters_digest(png_parameters(output, index))
        assert image_metadata(planned, index) == {
            PARAMS_DIGEST_METADATA: digest,
            REQUEST_DIGEST_METADATA: request_digest(planned),
        }
        size = len(store.get(image_key(PREFIX, "req-1", index)) or b"")
        assert store.head(image_key(PREFIX, "req-1", index)) == {
            "params-sha256": digest,
            "request-sha256": request_digest(planned),
            "bytes": str(size),  # contract 1.1: the size, for ImageRef.bytes
        }


def test_storage_errors_propagate(store: CountingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(key: str) -> dict[str, str] | None:
        raise StorageError("s3 head failed", retryable=True)

    store_job(store, job())  # listed images are looked at: a HEAD each
    monkeypatch.setattr(store, "head", unreachable)
    with pytest.raises(StorageError):
        stored_result(job(), store, PREFIX)

    def unlistable(folder: str, limit: int) -> list[str]:
        raise StorageError("s3 list failed", retryable=True)

    monkeypatch.setattr(store, "keys_in", unlistable)
    with pytest.raises(StorageError):
        stored_result(job(), store, PREFIX)
