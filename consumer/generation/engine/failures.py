"""Failed model loads, remembered for a while: requests for a model that cannot be loaded fail at
once instead of each starting one more multi-GB download or cache scan."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from consumer.generation.engine.protocol import EngineError


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
        # Only the engine's own verdicts: a bug or an interrupt is no fact about the model, and
        # a transient failure (not enough memory right now) may not recur.
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
