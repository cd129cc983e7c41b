"""Storing one request's images: one after the other (as before) next to each on its own I/O
thread (BatchProcessor.finish), same run, on the embedded SeaweedFS S3 store.

`python -m benchmarks.image_storage [--repeat 9] [--images 4] [--size 512]`. Images are the
synthetic photograph and the uniform noise of benchmarks/formats.py, PNG level 1. Prints the
median milliseconds from engine output to a `completed` result (encode + upload of every image).
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from benchmarks.formats import noise, photo
from benchmarks.throughput import make_settings, start_stack
from consumer.generation.engine import GenerationJob, JobOutput
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.processing import BatchProcessor
from consumer.output.images import encode_output, store_output
from storage import ImageStore, build_store


def job_output(make: Callable[[int], Image.Image], size: int, images: int) -> JobOutput:
    seeds = tuple(range(images))
    request_id = f"store-{uuid.uuid4().hex[:8]}"
    job = GenerationJob(request_id, "p", "n", "standard", "m", size, size, 1, 0.0, seeds)
    return JobOutput(job, [make(size) for _ in range(images)], 0.1)


def one_after_another(output: JobOutput, store: ImageStore) -> None:
    """The worker before: every image encoded, then every image uploaded, on one thread."""
    store_output(output, encode_output(output), store, "bench")


async def side_by_side(output: JobOutput, processor: BatchProcessor) -> None:
    result = await processor.finish(output)
    assert result.status == "completed", result


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def measure(args: argparse.Namespace, store: ImageStore) -> None:
    print(f"{'images':<22}{'one after another':>20}{'side by side (2 threads)':>26}")
    with ThreadPoolExecutor(2) as io, ThreadPoolExecutor(1) as engine_thread:
        processor = BatchProcessor(
            FakeEngine(), store, key_prefix="bench", timeout_seconds=60,
            engine_thread=engine_thread, io_threads=io,
        )  # fmt: skip
        for name, make in (("photo", photo), ("noise", noise)):
            before, after = [], []
            for _ in range(args.repeat + 1):  # the first of each is a warm-up
                output = job_output(make, args.size, args.images)
                started = time.perf_counter()
                await asyncio.to_thread(one_after_another, output, store)
                before.append(time.perf_counter() - started)
                output = job_output(make, args.size, args.images)
                started = time.perf_counter()
                await side_by_side(output, processor)
                after.append(time.perf_counter() - started)
            label = f"{args.images} x {name} {args.size}²"
            print(f"{label:<22}{median_ms(before[1:]):>17.1f} ms{median_ms(after[1:]):>23.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp, start_stack(Path(tmp)) as stack:
        store = build_store(make_settings(stack, "store"))
        asyncio.run(measure(args, store))


if __name__ == "__main__":
    main()
