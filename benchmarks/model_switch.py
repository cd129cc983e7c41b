"""Two models alternating in a backlog with MAX_MODELS_CACHE=1: model loads per request, with
the worker's old first-come order next to its loaded-model preference (BatchQueue), same run.

`python -m benchmarks.model_switch [--requests N]`. Real broker, store and diffusers engine on
tiny-sdxl and a copy of it in another folder (a second model id). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.throughput import (
    Stack,
    fill_topics,
    make_settings,
    request_bytes,
    start_stack,
    until,
)
from consumer.generation.batch_queue import BatchQueue
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.generation.engine.tiny_model import ensure_tiny_model_copy
from consumer.worker import Worker
from storage import build_store


async def run(stack: Stack, requests: int, prefer_loaded: bool) -> dict[str, Any]:
    name = f"switch-{uuid.uuid4().hex[:6]}"
    other = str(ensure_tiny_model_copy(stack.data_dir / "models"))
    settings = make_settings(
        stack, name, allowed_models=["tiny-sdxl", other], max_models_cache=1, max_batch_size=1
    )
    models = ["tiny-sdxl", other]
    events = [
        (f"r-{i:04d}", request_bytes(f"r-{i:04d}", 64, i, model=models[i % 2]))
        for i in range(requests)
    ]
    await fill_topics(settings, events)
    engine = DiffusersEngine(settings.engine_config())
    worker = Worker(settings, engine, build_store(settings))
    if not prefer_loaded:  # the order before BatchQueue: oldest first, whatever is loaded
        worker._pending = BatchQueue(model_of=lambda b: b[0].job.model, max_skips=0)
    task = asyncio.create_task(worker.run())
    started = time.perf_counter()
    try:
        await until(lambda: worker.completed >= requests or task.done(), 600, lambda: None)
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    seconds = time.perf_counter() - started
    loads = engine.stats.misses
    return {"requests": worker.completed, "loads": loads, "seconds": round(seconds, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-switch-") as tmp,
        start_stack(Path(tmp)) as stack,
    ):
        before = asyncio.run(run(stack, args.requests, prefer_loaded=False))
        after = asyncio.run(run(stack, args.requests, prefer_loaded=True))
    print("| order | requests | model loads | loads per request | seconds |")
    print("|---|---|---|---|---|")
    for label, row in (("first come (before)", before), ("loaded model first (after)", after)):
        per = row["loads"] / max(1, row["requests"])
        print(f"| {label} | {row['requests']} | {row['loads']} | {per:.2f} | {row['seconds']} |")


if __name__ == "__main__":
    main()
