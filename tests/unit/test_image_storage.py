"""Storing a request's images (consumer/output/uploads.py, through the batch processor): each
image encoded and uploaded on its own I/O thread, retried as a whole while the store is away,
each image encoded once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import consumer.output.uploads as uploads
from consumer.generation.engine import GenerationJob, JobOutput
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.processing import BatchProcessor
from storage import LocalImageStore, StorageError


class SlowStore(LocalImageStore):
    """Counts the uploads running at once; `failures` makes the first puts of a key fail."""

    def __init__(self, root: Path, failures: dict[str, StorageError] | None = None) -> None:
        super().__init__(root)
        self.failures = dict(failures or {})
        self.running = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, *args: Any, **kwargs: Any) -> str:
        with self._lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.05)  # an upload in flight, so that two can overlap
            failure = self.failures.pop(key.rsplit("/", 1)[-1], None)
            if failure is not None:
                raise failure
            return super().put(key, data, *args, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


def output(images: int = 4) -> JobOutput:
    seeds = tuple(range(images))
    job = GenerationJob("r-1", "p", "n", "standard", "m", 64, 64, 1, 0.0, seeds)
    pictures = [Image.new("RGB", (64, 64), (i * 40, 9, 9)) for i in range(images)]
    return JobOutput(job, pictures, 0.1)


def processor(store: LocalImageStore, io: ThreadPoolExecutor) -> BatchProcessor:
    engine_thread = ThreadPoolExecutor(1)
    return BatchProcessor(
        FakeEngine(),
        store,
        key_prefix="images",
        timeout_seconds=10,
        engine_thread=engine_thread,
        io_threads=io,
    )


async def test_the_images_of_a_request_are_stored_side_by_side(tmp_path: Path) -> None:
    store = SlowStore(tmp_path)
    with ThreadPoolExecutor(4) as io:
        result = await processor(store, io).finish(output(4))
    assert result.status == "completed" and result.images is not None
    assert [image.seed for image in result.images] == [0, 1, 2, 3]  # in order
    assert store.most_at_once >= 2
    assert all(store.get(f"images/r-1/{i}.png") is not None for i in range(4))


async def test_a_transient_failure_retries_and_each_image_is_encoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoded: list[int] = []
    original = uploads.encode_one

    def counting(out: JobOutput, index: int, level: int = 1) -> bytes:
        encoded.append(index)
        return original(out, index, level)

    monkeypatch.setattr(uploads, "encode_one", counting)
    store = SlowStore(tmp_path, {"2.png": StorageError("store away", retryable=True)})
    with ThreadPoolExecutor(2) as io:
        result = await processor(store, io).finish(output(4))
        assert store.running == 0  # nothing left uploading behind the result
    assert result.status == "completed"
    assert sorted(encoded) == [0, 1, 2, 3]


async def test_a_refusal_for_one_image_fails_the_request(tmp_path: Path) -> None:
    refused = StorageError("access denied", retryable=False, code="AccessDenied")
    store = SlowStore(tmp_path, {"1.png": refused})
    with ThreadPoolExecutor(2) as io:
        result = await processor(store, io).finish(output(3))
    assert result.status == "failed" and result.error is not None
    assert result.error.code == "storage_failed"
