"""Out of memory: recognised in all its forms, memory freed first, mapped to stable codes."""

from __future__ import annotations

import subprocess
import sys
import weakref
from typing import Any

import pytest

from consumer.generation.engine import EngineError, GenerationJob
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.engine.memory import (
    guard_generation,
    guard_load,
    guard_memory,
    is_out_of_memory,
    pipeline_bytes,
)
from consumer.ops.logs import route_library_logs
from schemas import ErrorCode


def job(request_id: str = "r", seeds: tuple[int, ...] = (1,)) -> GenerationJob:
    return GenerationJob(request_id, "p", "n", "standard", "m1", 64, 64, 1, 0.0, seeds)


def import_torch() -> Any:
    torch = pytest.importorskip("torch")
    route_library_logs()  # as the engines do after importing it (test_logs relies on it)
    return torch


def test_the_fake_engine_does_not_import_torch() -> None:
    code = "import sys, consumer.generation.engine.fake; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def out_of_memory_errors() -> list[BaseException]:
    torch = import_torch()
    return [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        MemoryError(),
        RuntimeError("CUDA error: out of memory"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17 GB)"),
    ]


def raising(exc: BaseException) -> object:
    raise exc


def test_every_kind_of_out_of_memory_becomes_out_of_memory() -> None:
    for exc in out_of_memory_errors():
        assert is_out_of_memory(exc)
        with pytest.raises(EngineError) as info:
            guard_generation(lambda exc=exc: raising(exc), "cpu")  # type: ignore[misc]
        assert info.value.code is ErrorCode.OUT_OF_MEMORY
        assert info.value.__cause__ is None and info.value.__context__ is None


def test_other_errors_pass_through_unchanged() -> None:
    for exc in (RuntimeError("expected all tensors on the same device"), ValueError("bad")):
        assert not is_out_of_memory(exc)
        with pytest.raises(type(exc)) as info:
            guard_generation(lambda exc=exc: raising(exc), "cpu")  # type: ignore[misc]
        assert info.value is exc


def test_a_load_out_of_memory_is_a_transient_model_unavailable() -> None:
    with pytest.raises(EngineError) as info:
        guard_load(lambda: raising(MemoryError()), "cpu", "big/model")
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "not enough memory" in info.value.message and "big/model" in info.value.message
    assert info.value.transient


class Tensors:
    """Stands for the activations a failed pipeline call's frames hold (with a cycle)."""

    def __init__(self) -> None:
        self.me = self


def test_the_failed_calls_memory_is_freed_before_the_error_is_raised() -> None:
    held: list[weakref.ref[Tensors]] = []

    def allocate_then_fail() -> None:
        activations = Tensors()
        held.append(weakref.ref(activations))
        raise MemoryError

    def error(detail: str) -> EngineError:
        assert held[0]() is None, "the traceback still holds the failed call's frames"
        return EngineError(ErrorCode.OUT_OF_MEMORY, detail)

    with pytest.raises(EngineError):
        guard_memory(allocate_then_fail, "cpu", error)


def test_fake_engine_runs_out_of_memory_above_n_images_and_stays_usable() -> None:
    engine = FakeEngine(oom_above_images=2)
    with pytest.raises(EngineError) as info:
        engine.generate([job("a", (1, 2)), job("b", (3,))], 0)
    assert info.value.code is ErrorCode.OUT_OF_MEMORY
    assert "CUDA out of memory" in info.value.message
    halves = [engine.generate([job("a", (1, 2))], 0), engine.generate([job("b", (3,))], 0)]
    assert [len(outputs[0].images) for outputs in halves] == [2, 1]
    assert engine.batches == [["a", "b"], ["a"], ["b"]]
    assert engine.loaded_models() == ["m1"]


def test_pipeline_bytes_counts_each_modules_parameters_and_buffers_once() -> None:
    torch = import_torch()

    class Pipeline:
        def __init__(self) -> None:
            shared = torch.nn.Linear(10, 10, dtype=torch.float16)  # 110 values, 2 bytes each
            norm = torch.nn.BatchNorm1d(10)  # 20 parameters + 21 buffer values, fp32 or int64
            self.components = {"unet": shared, "again": shared, "norm": norm, "tokenizer": "tok"}

    norm_bytes = 20 * 4 + 2 * 10 * 4 + 8  # weight, bias; running mean, var; num_batches_tracked
    assert pipeline_bytes(Pipeline()) == 110 * 2 + norm_bytes
    assert pipeline_bytes(object()) == 0
