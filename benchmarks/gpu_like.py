"""The worker with a GPU-like engine and an S3-like store, next to the engine alone, same run.

`python -m benchmarks.gpu_like [--requests 200] [--engine-ms 50] [--store-ms 20]`. No GPU here,
so the engine sleeps `--engine-ms` per batch off the GIL, as a CUDA call leaves the CPU free, and
makes 8x8 images; every store call (put, get, head, list, delete) takes `--store-ms`, as on S3. The
broker is the embedded Tansu. It shows whether the worker keeps the engine busy when the work
around each batch (uploads, journal writes, publishing) is latency, not CPU: the worker's rate
next to the engine's own. Synthetic; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.throughput import (
    MemoryStore,
    NullEngine,
    Stack,
    fill_backlog,
    make_settings,
    run_worker,
    start_stack,
)
from consumer.generation.engine import GenerationJob, JobOutput


class GpuLikeEngine(NullEngine):
    def __init__(self, seconds_per_batch: float) -> None:
        super().__init__()
        self.seconds_per_batch = seconds_per_batch

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: Any = None,
        on_step: Any = None,
    ) -> list[JobOutput]:
        time.sleep(self.seconds_per_batch)  # the GIL is free meanwhile, as during a CUDA call
        return super().generate(jobs, timeout_seconds, cancel, on_step)


class LatencyStore(MemoryStore):
    def __init__(self, seconds_per_call: float) -> None:
        super().__init__()
        self.delay = seconds_per_call

    def put(self, *args: Any, **kwargs: Any) -> str:
        time.sleep(self.delay)
        return super().put(*args, **kwargs)

    def get(self, key: str) -> bytes | None:
        time.sleep(self.delay)
        return super().get(key)

    def get_prefix(self, key: str, limit: int) -> bytes | None:
        time.sleep(self.delay)
        return super().get_prefix(key, limit)

    def head(self, key: str) -> dict[str, str] | None:
        time.sleep(self.delay)
        return super().head(key)

    def delete(self, key: str) -> None:
        time.sleep(self.delay)
        super().delete(key)

    def keys_in(self, folder: str, limit: int) -> list[str]:
        time.sleep(self.delay)
        return super().keys_in(folder, limit)


async def worker_rate(stack: Stack, args: argparse.Namespace) -> float:
    settings = make_settings(stack, f"gpulike-{uuid.uuid4().hex[:6]}")
    await fill_backlog(settings, args.requests, 64)
    engine = GpuLikeEngine(args.engine_ms / 1000)
    store = LatencyStore(args.store_ms / 1000)
    run = await run_worker(settings, engine, store, args.requests, args.requests // 10)
    assert run["completed"] == args.requests, run
    return float(run["rate"])


def engine_rate(args: argparse.Namespace, batch: int) -> float:
    engine = GpuLikeEngine(args.engine_ms / 1000)
    job = GenerationJob("e", "p", "n", "standard", "m", 64, 64, 1, 0.0, tuple(range(batch)))
    started = time.perf_counter()
    for _ in range(10):
        engine.generate([job], 0)
    return 10 * batch / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--engine-ms", type=float, default=50.0)
    parser.add_argument("--store-ms", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gpulike-") as tmp, start_stack(Path(tmp)) as s:
        settings = make_settings(s, "probe")
        alone = engine_rate(args, settings.max_batch_size)
        worker = asyncio.run(worker_rate(s, args))
    print(f"engine alone (batch {settings.max_batch_size})  {alone:7.1f} img/s")
    print(f"worker                   {worker:7.1f} img/s   ({worker / alone:.2f} of the engine)")


if __name__ == "__main__":
    main()
