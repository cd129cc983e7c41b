"""Failed model loads: what a failure says, and remembering it for a while, so that requests
for a model that cannot be loaded fail at once instead of each starting one more multi-GB
download or cache scan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.generation.engine.memory import is_out_of_memory
from consumer.generation.engine.protocol import EngineError
from schemas import ErrorCode


def unavailable(
    model_id: str, exc: BaseException, why: str, *, transient: bool = False
) -> EngineError:
    """`model_unavailable`, saying why and the first line of what was raised."""
    detail = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return EngineError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"model '{model_id}' cannot be loaded: {why} ({detail})",
        transient=transient,
    )


def load_failure(model_id: str, exc: BaseException) -> BaseException:
    """What a failed load raises to its callers: the engine's own EngineError as it is; any
    other exception (a corrupt safetensors file raises safetensors' own error, a truncated one
    OSError, weights that do not fit their config RuntimeError) is a fact about the model too,
    so `model_unavailable` (transient when memory ran out), not `internal_error` on every
    request that names it. Interrupts (KeyboardInterrupt, SystemExit) stay what they are."""
    if isinstance(exc, EngineError) or not isinstance(exc, Exception):
        return exc
    if is_out_of_memory(exc):
        return unavailable(model_id, exc, "not enough memory", transient=True)
    return unavailable(model_id, exc, "loading it failed")


@dataclass(frozen=True)
class _Failure:
    error: EngineError
    until: float  # clock() time after which the model may be tried again


class FailedLoads:
    """Not thread-safe: the model cache calls it under its own lock. Bounded by the number of
    model ids, which the allowlist bounds."""

    def __init__(self, retry_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._failures: dict[str, _Failure] = {}

    def remember(self, model_id: str, exc: BaseException) -> None:
        # `exc` went through load_failure: any failed load is an EngineError by now. Not an
        # interrupt (no fact about the model), nor a transient failure (not enough memory right
        # now), which may not recur.
        if self._retry_seconds and isinstance(exc, EngineError) and not exc.transient:
            self._failures[model_id] = _Failure(exc, self._clock() + self._retry_seconds)

    def refusal(self, model_id: str) -> EngineError | None:
        """The error to fail a request with at once, or None when the model may be tried.
        A fresh object: one exception raised again from many threads would pile up tracebacks."""
        failure = self._failures.get(model_id)
        if failure is None:
            return None
        left = failure.until - self._clock()
        if left <= 0:
            del self._failures[model_id]
            return None
        message = f"{failure.error.message} [last load failed; next try in {left:.0f} s]"
        return EngineError(failure.error.code, message)

    def forget(self, model_id: str | None = None) -> None:
        """One model, or all (None)."""
        if model_id is None:
            self._failures.clear()
        else:
            self._failures.pop(model_id, None)
