"""LoRA adapters per request (contract 1.2), on the diffusers engine's pipelines.

- An adapter is loaded into a pipeline on first use (`load_lora_weights(adapter_name=...)`,
  safetensors only), and at most `capacity` stay loaded in each pipeline: the least recently used
  one not needed now is deleted first. They live in the pipeline's modules (PEFT layers beside
  the weights), so the image-to-image pipeline made from it (`from_pipe`) has them too, and they
  go when the pipeline is unloaded.
- Each engine call activates its batch's set at its scales (`set_adapters`), or turns adapters
  off (`disable_lora`) for a call without any. They are never fused: the shared weights stay the
  base model's, and another call's set can never leak into this one.
- An adapter that cannot be loaded is `lora_unavailable`, remembered (for that model) for
  MODEL_RETRY_SECONDS as a model's failure is (failures.py): meanwhile requests naming it fail
  at once.

Called on the engine thread only, with the pipeline's call lock held.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from consumer.generation.engine.catalog import model_kind
from consumer.generation.engine.config import LoraSource
from consumer.generation.engine.failures import FailedLoads
from consumer.generation.engine.jobs import Loras
from consumer.generation.engine.protocol import EngineError
from consumer.generation.engine.tiny_lora import TINY_LORA_ID, ensure_tiny_lora
from schemas import ErrorCode

log = logging.getLogger(__name__)

_STATE = "_worker_lora_adapters"  # the pipeline attribute listing its adapters, LRU first


class LoraAdapters:
    def __init__(
        self,
        sources: Mapping[str, LoraSource],
        models_dir: Path,
        *,
        capacity: int = 4,
        offline: bool = False,
        retry_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._sources = dict(sources)
        self._models_dir = models_dir
        self._capacity = capacity
        self._offline = offline
        self._failures = FailedLoads(retry_seconds, clock)
        self.loads: list[str] = []  # every load attempt, in order (for tests and logs)

    def apply(self, pipeline: Any, model_id: str, loras: Loras) -> None:
        """Make `loras` (at their scales) the pipeline's active adapters, or none."""
        loaded: OrderedDict[str, None] = getattr(pipeline, _STATE, None) or OrderedDict()
        if not loras:
            if loaded:
                pipeline.disable_lora()
            return
        names = [name for name, _ in loras]
        for name in names:
            if name in loaded:
                loaded.move_to_end(name)
                continue
            self._make_room(pipeline, loaded, keep=names)
            self._load(pipeline, model_id, name)
            loaded[name] = None
            setattr(pipeline, _STATE, loaded)
        pipeline.enable_lora()
        pipeline.set_adapters(names, adapter_weights=[scale for _, scale in loras])

    def loaded(self, pipeline: Any) -> list[str]:
        """The adapters loaded in `pipeline`, least recently used first."""
        return list(getattr(pipeline, _STATE, None) or ())

    def forget(self) -> None:
        """Failed loads are forgotten: the next request naming one tries again."""
        self._failures.forget()

    def _make_room(self, pipeline: Any, loaded: OrderedDict[str, None], keep: list[str]) -> None:
        for victim in [name for name in loaded if name not in keep]:
            if len(loaded) < self._capacity:
                return
            pipeline.delete_adapters([victim])
            del loaded[victim]
            log.info("LoRA adapter %s unloaded (MAX_LORAS_CACHE)", victim)

    def _load(self, pipeline: Any, model_id: str, name: str) -> None:
        # Remembered per model: an adapter made for one base model may well load on another.
        failure_key = f"{name}\0{model_id}"
        refusal = self._failures.refusal(failure_key)
        if refusal is not None:
            raise refusal
        self.loads.append(name)
        source = self._sources.get(name)
        try:
            if source is None:
                raise KeyError(f"{name} is not in ALLOWED_LORAS")
            where, options = self._where(source)
            pipeline.load_lora_weights(where, adapter_name=name, use_safetensors=True, **options)
        except Exception as exc:
            with contextlib.suppress(Exception):  # no half-loaded adapter left behind
                pipeline.delete_adapters([name])
            detail = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            error = EngineError(
                ErrorCode.LORA_UNAVAILABLE,
                f"LoRA '{name}' cannot be loaded on {model_id}: {detail}",
            )
            log.warning("LoRA adapter %s failed to load", name, exc_info=exc)
            self._failures.remember(failure_key, error)
            raise error from exc
        log.info("LoRA adapter %s loaded into %s", name, model_id)

    def _where(self, source: LoraSource) -> tuple[str, dict[str, Any]]:
        """The path or hub id to load from, and load_lora_weights' options for it."""
        if source.source == TINY_LORA_ID:
            return str(ensure_tiny_lora(self._models_dir)), {}
        if model_kind(source.source) == "local":
            return str(Path(source.source).expanduser()), {}
        options: dict[str, Any] = {"local_files_only": self._offline}
        if source.revision is not None:
            options["revision"] = source.revision
        return source.source, options
