"""The stand-ins the benchmarks use must keep up with the protocols they stand in for: a stale
signature makes every call fail and a benchmark section measure failures."""

from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor

from benchmarks.throughput import MemoryStore, NullEngine
from consumer.generation.engine import Engine, GenerationJob
from consumer.generation.processing import BatchProcessor
from storage import ImageStore


def test_the_null_engine_takes_every_argument_of_the_engine_protocol() -> None:
    expected = list(inspect.signature(Engine.generate).parameters)
    assert list(inspect.signature(NullEngine.generate).parameters) == expected


def test_the_memory_store_has_every_method_of_the_image_store_protocol() -> None:
    wanted = {name for name in vars(ImageStore) if not name.startswith("_")}
    assert wanted <= set(dir(MemoryStore))


async def test_the_null_engine_and_memory_store_complete_a_request() -> None:
    job = GenerationJob("r-1", "p", "n", "standard", "m", 64, 64, 1, 0.0, (1, 2))
    with ThreadPoolExecutor(1) as engine_thread, ThreadPoolExecutor(2) as io:
        processor = BatchProcessor(
            NullEngine(), MemoryStore(), key_prefix="b", timeout_seconds=5,
            engine_thread=engine_thread, io_threads=io,
        )  # fmt: skip
        (outcome,) = await processor.generate([job], on_step=lambda ids, step, total: None)
        result = await processor.finish(outcome)
    assert result.status == "completed"
