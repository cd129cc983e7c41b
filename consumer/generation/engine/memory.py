"""Running out of memory, and giving memory back.

torch is never imported here at module level: the fake engine uses these helpers and unit tests
must not pay for torch. An exception can only be torch's if torch is already imported.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from typing import TypeVar

from consumer.generation.engine.protocol import EngineError
from schemas import ErrorCode

T = TypeVar("T")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError, a host MemoryError, or a RuntimeError saying so (MPS, cuDNN and
    cuBLAS allocation failures only say it in the message)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def free_memory(device: str) -> None:
    """Collect unreferenced objects (diffusers modules hold reference cycles), then hand the
    blocks torch's CUDA caching allocator keeps back to the device."""
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def guard_memory(call: Callable[[], T], device: str, error: Callable[[str], EngineError]) -> T:
    """`call()`; when it runs out of memory, free memory and raise `error(detail)` instead."""
    try:
        return call()
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        detail = _first_line(exc)
    # Outside the except block on purpose: until it ends, the exception's traceback keeps every
    # frame of the failed call alive, with the tensors they hold, and nothing could be freed.
    # For the same reason the EngineError is not chained to it.
    free_memory(device)
    raise error(detail)


def guard_generation(call: Callable[[], T], device: str) -> T:
    """A pipeline call: out of memory is OUT_OF_MEMORY (the caller may split the batch)."""
    return guard_memory(
        call,
        device,
        lambda detail: EngineError(
            ErrorCode.OUT_OF_MEMORY, f"out of memory while generating ({detail})"
        ),
    )


def guard_load(call: Callable[[], T], device: str, model_id: str) -> T:
    """A model load: out of memory is MODEL_UNAVAILABLE, `transient` so that the cache does not
    remember it (memory may be there on the next request)."""
    return guard_memory(
        call,
        device,
        lambda detail: EngineError(
            ErrorCode.MODEL_UNAVAILABLE,
            f"model '{model_id}' cannot be loaded: not enough memory ({detail})",
            transient=True,
        ),
    )


def pipeline_bytes(pipeline: object) -> int:
    """Bytes of the parameters and buffers of a diffusers pipeline's torch modules (its
    `components`); 0 for anything else. A module or tensor shared by two components counts once."""
    components = getattr(pipeline, "components", None)
    if not isinstance(components, dict):
        return 0
    seen: set[int] = set()
    total = 0
    for component in components.values():
        if not (hasattr(component, "parameters") and hasattr(component, "buffers")):
            continue  # tokenizers, schedulers, None
        for tensor in (*component.parameters(), *component.buffers()):
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
