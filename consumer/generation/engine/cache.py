"""An LRU cache of lazily loaded pipelines, safe to use from several threads.

- A model is loaded on first use, once, however many threads ask for it at the same moment.
- At most `capacity` models stay loaded, and with a byte budget (`max_bytes`) at most that many
  bytes of them (one model always may, whatever its size). Idle least-recently-used models go
  before a load, to make room for the incoming model's size when it was last loaded; a model
  never loaded before is measured once loaded and the cache trims itself then. A model that
  clearly cannot load (the `precheck` says so) evicts nothing.
- A pipeline in use is never evicted or purged: if every slot is busy the cache briefly holds one
  more and trims itself when a user lets go.
- A pipeline object is not thread-safe, so each entry has a lock that serialises its calls.
- Whatever a load raises is `model_unavailable` to its callers (failures.py: a corrupt weights
  file is a fact about the model, not a bug), and a load that failed for good (not a transient
  lack of memory) is remembered for `retry_seconds`: meanwhile requests for that model fail at
  once instead of starting one more multi-GB download.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from consumer.generation.engine.activity import LOADING, EngineActivity
from consumer.generation.engine.failures import FailedLoads, load_failure
from consumer.generation.engine.protocol import CacheStats, PurgeResult

P = TypeVar("P")

log = logging.getLogger(__name__)


@dataclass
class _Entry(Generic[P]):
    loaded: threading.Event = field(default_factory=threading.Event)
    pipeline: P | None = None
    error: BaseException | None = None
    users: int = 0
    nbytes: int = 0  # measured once loaded; until then the size when last loaded, if known
    call_lock: threading.Lock = field(default_factory=threading.Lock)


class ModelCache(Generic[P]):
    def __init__(
        self,
        loader: Callable[[str], P],
        capacity: int,
        on_unload: Callable[[list[str]], None] | None = None,
        *,
        precheck: Callable[[str], None] | None = None,
        max_bytes: int = 0,
        size_of: Callable[[P], int] | None = None,
        retry_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`on_unload(model_ids)` runs outside the lock once the cache holds no reference to
        those models' pipelines any more: the place to give their memory back.
        `precheck(model_id)`: raises, quickly, when a model clearly cannot load, before anything
        is evicted for it; the error counts as a failed load.
        `max_bytes`: the byte budget (0: none), pipelines measured by `size_of`.
        `retry_seconds`: how long a failed load is remembered (0: not at all)."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._loader = loader
        self._precheck = precheck
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._size_of = size_of
        self._sizes: dict[str, int] = {}  # each model's size when last loaded, kept after it goes
        self._on_unload = on_unload
        self._failures = FailedLoads(retry_seconds, clock)
        self._entries: OrderedDict[str, _Entry[P]] = OrderedDict()
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @contextmanager
    def use(self, model_id: str) -> Iterator[P]:
        """Yield the pipeline for `model_id`, loading it if needed, with exclusive use of it.

        Keep no reference to it past the block (`del` the `as` name): the cache may unload it
        as the block ends, and a reference left in the caller's frame keeps its memory."""
        entry, must_load = self._acquire(model_id)
        try:
            if must_load:  # the first caller loads; concurrent callers wait for it
                self._load(model_id, entry)
            with entry.call_lock:
                # No local name for the pipeline: this frame must not keep alive what
                # _release may unload.
                yield self._ready(entry)
        finally:
            self._release(entry)

    def loaded(self) -> list[str]:
        """Loaded models, least recently used first."""
        with self._lock:
            return self._loaded_ids()

    def describe(self) -> dict[str, object]:
        with self._lock:
            return {
                "loaded_models": self._loaded_ids(),
                "loaded_bytes": self.stats.loaded_bytes,
                "max_models": self._capacity,
                "max_cache_bytes": self._max_bytes,
            }

    def purge(self, model_id: str | None = None) -> PurgeResult:
        """Drop one model (or all); models in use stay and are listed in `remaining`. Failed
        loads of those models are forgotten too: the next request tries again."""
        with self._lock:
            targets = [model_id] if model_id is not None else list(self._entries)
            self._failures.forget(model_id)
            removed = [m for m in targets if self._drop_if_idle(m)]
            remaining = self._loaded_ids()
        self._unloaded(removed)
        return PurgeResult(model_id=model_id, removed=removed, remaining=remaining)

    # --- internals ------------------------------------------------------------------------------

    def _acquire(self, model_id: str) -> tuple[_Entry[P], bool]:
        """The entry to use, and whether this caller must load it."""
        with self._lock:
            refusal = self._failures.refusal(model_id)
            if refusal is not None:
                self.stats.refused_loads += 1
                raise refusal
            entry = self._entries.get(model_id)
            must_load = entry is None
            if entry is None:
                entry = _Entry(nbytes=self._sizes.get(model_id, 0))
                self._entries[model_id] = entry
                self.stats.misses += 1
            else:
                self.stats.hits += 1
            entry.users += 1
            self._entries.move_to_end(model_id)
            return entry, must_load

    def _load(self, model_id: str, entry: _Entry[P]) -> None:
        try:
            if self._precheck is not None:
                self._precheck(model_id)
            with self._lock:
                evicted = self._make_room()
            self._unloaded(evicted)  # before the load: never two models' weights at once
            started = time.perf_counter()
            self._store(model_id, entry, self._loader(model_id), started)
        except BaseException as exc:  # handed to every waiter, re-raised there
            error = load_failure(model_id, exc)
            if error is not exc:
                log.warning("model %s failed to load", model_id, exc_info=exc)
                error.__cause__ = exc
            entry.error = error
            with self._lock:  # no half entry
                self.stats.failed_loads += 1
                if self._entries.get(model_id) is entry:
                    del self._entries[model_id]
                self._failures.remember(model_id, error)
        finally:
            entry.loaded.set()

    def _store(self, model_id: str, entry: _Entry[P], pipeline: P, started: float) -> None:
        nbytes = self._size_of(pipeline) if self._size_of is not None else 0
        with self._lock:
            entry.pipeline, entry.nbytes = pipeline, nbytes
            self._sizes[model_id] = nbytes
            self._count_bytes()
            self.stats.load_seconds[model_id] = time.perf_counter() - started
        if self._max_bytes and nbytes > self._max_bytes:
            log.warning(
                "model %s alone takes %d bytes, more than MODEL_CACHE_MAX_BYTES=%d: it stays "
                "loaded, but never beside another model",
                model_id,
                nbytes,
                self._max_bytes,
            )

    def _ready(self, entry: _Entry[P]) -> P:
        entry.loaded.wait()
        if entry.error is not None:
            raise entry.error
        assert entry.pipeline is not None
        with self._lock:  # over capacity when what had to go was in use: trim what is idle now
            evicted = self._trim()
        self._unloaded(evicted)
        return entry.pipeline

    def _release(self, entry: _Entry[P]) -> None:
        with self._lock:
            entry.users -= 1
            evicted = self._trim()
        self._unloaded(evicted)

    def _loaded_ids(self) -> list[str]:
        return [m for m, e in self._entries.items() if e.pipeline is not None]

    def _fits(self, count: int, nbytes: int) -> bool:
        over_budget = bool(self._max_bytes) and nbytes > self._max_bytes and count > 1
        return count <= self._capacity and not over_budget

    def _make_room(self) -> list[str]:
        """Evict idle least-recently-used models until the entries fit, loading ones included at
        their size when last loaded (a first load counts 0 bytes: trimmed once loaded)."""
        evicted: list[str] = []
        for model_id in list(self._entries):
            if self._fits(len(self._entries), sum(e.nbytes for e in self._entries.values())):
                break
            if self._drop_if_idle(model_id):
                evicted.append(model_id)
        self.stats.evictions += len(evicted)
        return evicted

    def _trim(self) -> list[str]:
        """Evict idle least-recently-used models until the loaded ones fit."""
        evicted: list[str] = []
        for model_id in self._loaded_ids():
            if self._fits(len(self._loaded_ids()), self.stats.loaded_bytes):
                break
            if self._drop_if_idle(model_id):
                evicted.append(model_id)
        self.stats.evictions += len(evicted)
        return evicted

    def _count_bytes(self) -> None:
        loaded = (e.nbytes for e in self._entries.values() if e.pipeline is not None)
        self.stats.loaded_bytes = sum(loaded)

    def _drop_if_idle(self, model_id: str) -> bool:
        entry = self._entries.get(model_id)
        if entry is None or entry.users > 0 or entry.pipeline is None:
            return False
        del self._entries[model_id]
        entry.pipeline = None  # the entry may outlive this call (a waiter's reference)
        self._count_bytes()
        return True

    def _unloaded(self, model_ids: list[str]) -> None:
        """Outside the lock: freeing memory (gc, the CUDA allocator) takes time."""
        if model_ids and self._on_unload is not None:
            self._on_unload(model_ids)


class CacheBackedEngine(Generic[P]):
    """The engine protocol's model-management half, served by a ModelCache."""

    _cache: ModelCache[P]
    activity: EngineActivity

    def _watched(self, loader: Callable[[str], P]) -> Callable[[str], P]:
        """The loader, with each load marked as a `loading` phase for the watchdog."""

        def load(model_id: str) -> P:
            with self.activity.phase(LOADING, model_id):
                return loader(model_id)

        return load

    def loaded_models(self) -> list[str]:
        return self._cache.loaded()

    def purge(self, model_id: str | None = None) -> PurgeResult:
        return self._cache.purge(model_id)

    @property
    def stats(self) -> CacheStats:
        return self._cache.stats
