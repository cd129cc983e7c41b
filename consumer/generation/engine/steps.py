"""What every engine checks at a denoising step boundary (no torch here: the simulated engine
uses it too)."""

from __future__ import annotations

import threading
import time

from schemas import ErrorCode


def stop_reason(
    started: float, timeout_seconds: float, cancel: threading.Event | None, step: int
) -> tuple[ErrorCode, str] | None:
    """Why a generation must stop at the end of step `step` (0-based), or None: the worker gave
    the batch up (`cancel`), or `timeout_seconds` (0: none) have passed since `started`
    (time.perf_counter())."""
    if cancel is not None and cancel.is_set():
        return ErrorCode.GENERATION_FAILED, "generation abandoned by the worker"
    elapsed = time.perf_counter() - started
    if timeout_seconds and elapsed > timeout_seconds:
        return ErrorCode.TIMEOUT, (
            f"generation stopped after {elapsed:.2f}s at step {step + 1} "
            f"(GENERATION_TIMEOUT_SECONDS={timeout_seconds:g})"
        )
    return None
