"""The LRU of pipelines: lazy, loaded once under concurrency, never evicting what is in use."""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from consumer.generation.engine import EngineError
from consumer.generation.engine.cache import ModelCache
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.engine.jobs import GenerationJob
from schemas import ErrorCode


def job(
    model: str = "m1", request_id: str = "r", steps: int = 1, seeds: tuple[int, ...] = (1,)
) -> GenerationJob:
    return GenerationJob(request_id, "p", "n", "standard", model, 64, 64, steps, 0.0, seeds)


def test_lazy_load_then_hits() -> None:
    engine = FakeEngine(capacity=2)
    assert engine.loaded_models() == []
    engine.generate([job()], 0)
    engine.generate([job()], 0)
    assert engine.load_calls == ["m1"]
    assert (engine.stats.misses, engine.stats.hits) == (1, 1)


def test_concurrent_requests_for_one_model_load_it_once() -> None:
    engine = FakeEngine(capacity=2, load_seconds=0.2)
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda i: engine.generate([job(request_id=f"r{i}")], 0), range(8)))
    assert engine.load_calls == ["m1"]
    assert len(outputs) == 8


def test_lru_evicts_least_recently_used() -> None:
    engine = FakeEngine(capacity=2)
    for model in ["a", "b", "a", "c"]:
        engine.generate([job(model)], 0)
    assert engine.loaded_models() == ["a", "c"]
    assert engine.evicted == ["b"]
    assert engine.stats.evictions == 1


def test_a_pipeline_in_use_is_never_evicted() -> None:
    cache: ModelCache[str] = ModelCache(lambda m: f"pipe-{m}", capacity=1)
    holding, release = threading.Event(), threading.Event()

    def hold_a() -> None:
        with cache.use("a"):
            holding.set()
            release.wait(5)

    holder = threading.Thread(target=hold_a)
    holder.start()
    assert holding.wait(5)
    with cache.use("b") as pipe:
        assert pipe == "pipe-b"
        assert set(cache.loaded()) == {"a", "b"}  # over capacity rather than evicting "a"
    assert cache.loaded() == ["a"]  # once "b" is released it is the one to go: "a" is in use
    release.set()
    holder.join(5)
    assert len(cache.loaded()) == 1


def test_purge_one_and_all() -> None:
    engine = FakeEngine(capacity=3)
    for model in ["a", "b", "c"]:
        engine.generate([job(model)], 0)
    one = engine.purge("b")
    assert one.as_dict() == {"model_id": "b", "removed": ["b"], "remaining": ["a", "c"]}
    assert engine.purge("zzz").removed == []
    everything = engine.purge()
    assert everything.model_id is None
    assert sorted(everything.removed) == ["a", "c"] and everything.remaining == []
    engine.generate([job("a")], 0)
    assert engine.load_calls.count("a") == 2  # purged models load again on demand


def test_purge_leaves_a_model_in_use() -> None:
    cache: ModelCache[str] = ModelCache(lambda m: m, capacity=2)
    with cache.use("a"):
        result = cache.purge()
        assert result.removed == [] and result.remaining == ["a"]
    assert cache.purge().removed == ["a"]


def test_failed_load_is_reported_to_every_waiter_and_retried_later() -> None:
    engine = FakeEngine(
        capacity=2, load_seconds=0.1, unavailable=frozenset({"bad"}), model_retry_seconds=0
    )
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(engine.generate, [job("bad")], 0) for _ in range(4)]
    for future in futures:
        with pytest.raises(EngineError) as info:
            future.result()
        assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert engine.load_calls == ["bad"]
    assert engine.loaded_models() == []
    with pytest.raises(EngineError):
        engine.generate([job("bad")], 0)
    assert engine.load_calls == ["bad", "bad"]


def test_timeout_and_engine_still_usable() -> None:
    engine = FakeEngine(step_seconds=0.01)
    with pytest.raises(EngineError) as info:
        engine.generate([job(steps=20)], timeout_seconds=0.02)
    assert info.value.code is ErrorCode.TIMEOUT
    started = time.perf_counter()
    outputs = engine.generate([job(steps=1)], timeout_seconds=1)
    assert outputs[0].images and time.perf_counter() - started < 5


def test_batch_outputs_keep_each_jobs_seeds() -> None:
    engine = FakeEngine()
    outputs = engine.generate(
        [job(request_id="a", seeds=(1, 2)), job(request_id="b", seeds=(3,))], 0
    )
    assert [len(o.images) for o in outputs] == [2, 1]
    assert [o.job.request_id for o in outputs] == ["a", "b"]
    assert outputs[0].images[1].getpixel((0, 0)) == (2, 0, 0)


class Pipe:
    """A stand-in pipeline with a reference cycle, as diffusers modules have: only a garbage
    collection frees it once unreferenced."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.me = self


def collect(model_ids: list[str]) -> None:
    gc.collect()


def recording_loader(
    alive: dict[str, weakref.ref[Pipe]], at_load: list[list[str]]
) -> Callable[[str], Pipe]:
    def load(model_id: str) -> Pipe:
        gc.collect()  # what the engine's unload hook does: only unreferenced pipelines go
        at_load.append([m for m, ref in alive.items() if ref() is not None])
        pipe = Pipe(model_id)
        alive[model_id] = weakref.ref(pipe)
        return pipe

    return load


def test_the_lru_model_is_evicted_before_the_new_one_loads() -> None:
    alive: dict[str, weakref.ref[Pipe]] = {}
    at_load: list[list[str]] = []
    cache: ModelCache[Pipe] = ModelCache(recording_loader(alive, at_load), capacity=1)
    for model in ["a", "b", "a"]:
        with cache.use(model) as pipe:
            assert pipe.model_id == model
            del pipe  # as the engines do: a caller's reference would keep it alive
    assert at_load == [[], [], []]  # never two pipelines alive at once with capacity 1
    assert cache.stats.evictions == 2


def test_unload_hook_runs_unlocked_once_nothing_references_the_pipeline() -> None:
    alive: dict[str, weakref.ref[Pipe]] = {}
    hook_saw: list[tuple[list[str], bool, bool]] = []

    def on_unload(model_ids: list[str]) -> None:
        gc.collect()
        gone = all(alive[m]() is None for m in model_ids)
        other = threading.Thread(target=cache.loaded)  # would block if the lock were held
        other.start()
        other.join(2)
        hook_saw.append((model_ids, gone, not other.is_alive()))

    cache: ModelCache[Pipe] = ModelCache(
        recording_loader(alive, []),
        capacity=1,
        on_unload=on_unload,
    )
    with cache.use("a"):
        pass
    with cache.use("b"):  # evicts "a"
        pass
    assert hook_saw == [(["a"], True, True)]
    assert alive["a"]() is None
    cache.purge()
    assert hook_saw[-1] == (["b"], True, True)
    assert alive["b"]() is None


def test_a_pipeline_released_over_capacity_is_freed() -> None:
    alive: dict[str, weakref.ref[Pipe]] = {}
    cache: ModelCache[Pipe] = ModelCache(
        recording_loader(alive, []),
        capacity=1,
        on_unload=collect,
    )
    with cache.use("a"):
        with cache.use("b"):  # "a" is in use: over capacity for a while
            assert set(cache.loaded()) == {"a", "b"}
        assert alive["b"]() is None  # "b" went when released: "a" is still in use
    assert cache.loaded() == ["a"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_load_is_remembered_for_the_retry_window() -> None:
    clock = FakeClock()
    engine = FakeEngine(unavailable=frozenset({"bad"}), model_retry_seconds=60, clock=clock)
    with pytest.raises(EngineError) as first:
        engine.generate([job("bad")], 0)
    clock.now = 59
    for _ in range(3):
        with pytest.raises(EngineError) as again:
            engine.generate([job("bad")], 0)
        assert again.value.code is ErrorCode.MODEL_UNAVAILABLE
        assert again.value.message.startswith(first.value.message)
    assert engine.load_calls == ["bad"]  # no new attempt: no download storm
    assert (engine.stats.failed_loads, engine.stats.refused_loads) == (1, 3)
    engine.generate([job("m1")], 0)  # other models are not affected
    clock.now = 61
    with pytest.raises(EngineError):
        engine.generate([job("bad")], 0)
    assert engine.load_calls == ["bad", "m1", "bad"]


def test_purge_forgets_failed_loads() -> None:
    engine = FakeEngine(unavailable=frozenset({"bad"}), model_retry_seconds=60)
    for _ in range(2):
        with pytest.raises(EngineError):
            engine.generate([job("bad")], 0)
        engine.purge("bad")
    assert engine.load_calls == ["bad", "bad"]


def test_a_transient_load_failure_is_not_remembered_and_leaves_no_entry() -> None:
    attempts: list[str] = []

    def load(model_id: str) -> Pipe:
        attempts.append(model_id)
        if len(attempts) == 1:
            raise EngineError(ErrorCode.MODEL_UNAVAILABLE, "not enough memory", transient=True)
        return Pipe(model_id)

    cache: ModelCache[Pipe] = ModelCache(load, capacity=1, retry_seconds=60)
    with pytest.raises(EngineError), cache.use("a"):
        pass
    assert cache.loaded() == [] and cache.stats.failed_loads == 1
    with cache.use("a") as pipe:
        assert pipe.model_id == "a"
        del pipe
    assert attempts == ["a", "a"] and cache.loaded() == ["a"]


class Sized(Pipe):
    def __init__(self, model_id: str, nbytes: int) -> None:
        super().__init__(model_id)
        self.nbytes = nbytes


def sized_cache(sizes: dict[str, int], max_bytes: int, seen: list[list[str]]) -> ModelCache[Sized]:
    def load(model_id: str) -> Sized:
        seen.append(cache.loaded())  # what is loaded while this load runs
        return Sized(model_id, sizes[model_id])

    cache: ModelCache[Sized] = ModelCache(
        load, capacity=10, max_bytes=max_bytes, size_of=lambda p: p.nbytes
    )
    return cache


def use_all(cache: ModelCache[Sized], *models: str) -> None:
    for model in models:
        with cache.use(model) as pipe:
            del pipe


def test_byte_budget_trims_after_a_first_load_and_evicts_before_a_known_one() -> None:
    seen: list[list[str]] = []
    cache = sized_cache({"a": 40, "b": 40, "c": 50}, 100, seen)
    use_all(cache, "a", "b")
    assert cache.stats.loaded_bytes == 80
    use_all(cache, "c")  # size unknown before loading: loaded, then "a" goes
    assert seen[-1] == ["a", "b"]
    assert cache.loaded() == ["b", "c"] and cache.stats.loaded_bytes == 90
    use_all(cache, "a")  # 40 bytes last time: "b" goes before the load starts
    assert seen[-1] == ["c"]
    assert cache.loaded() == ["c", "a"] and cache.stats.loaded_bytes == 90
    assert cache.stats.evictions == 2


def test_a_model_larger_than_the_budget_is_kept_alone() -> None:
    seen: list[list[str]] = []
    cache = sized_cache({"big": 150, "small": 30}, 100, seen)
    use_all(cache, "big")
    assert cache.loaded() == ["big"]  # not unloaded after each use
    use_all(cache, "small")
    assert cache.loaded() == ["small"]
    use_all(cache, "big")
    assert seen[-1] == [] and cache.loaded() == ["big"]


def test_engines_report_loaded_bytes() -> None:
    engine = FakeEngine(capacity=2, max_bytes=1000, model_bytes={"a": 300, "b": 200})
    for model in "ab":
        engine.generate([job(model)], 0)
    assert engine.stats.loaded_bytes == 500
    facts = engine.describe()
    assert facts["loaded_bytes"] == 500 and facts["max_cache_bytes"] == 1000
    assert facts["loaded_models"] == ["a", "b"]
    engine.purge("a")
    assert engine.stats.loaded_bytes == 200


def test_a_model_that_clearly_cannot_load_evicts_nothing() -> None:
    def precheck(model_id: str) -> None:
        if model_id == "missing":
            raise EngineError(ErrorCode.MODEL_UNAVAILABLE, "no such folder")

    loads: list[str] = []

    def load(model_id: str) -> Pipe:
        loads.append(model_id)
        return Pipe(model_id)

    cache: ModelCache[Pipe] = ModelCache(load, capacity=1, precheck=precheck, retry_seconds=60)
    with cache.use("good") as pipe:
        del pipe
    for _ in range(2):
        with pytest.raises(EngineError), cache.use("missing"):
            pass
    assert cache.loaded() == ["good"] and cache.stats.evictions == 0
    assert loads == ["good"]
    assert (cache.stats.failed_loads, cache.stats.refused_loads) == (1, 1)


def _corrupt_weights() -> BaseException:
    from safetensors import SafetensorError  # what safe_open raises on a truncated header

    return SafetensorError("Error while deserializing header: MetadataIncompleteBuffer")


@pytest.mark.parametrize(
    "raised",
    [
        _corrupt_weights,
        lambda: OSError("Unable to load weights from checkpoint file"),
        lambda: RuntimeError("Error(s) in loading state_dict: size mismatch for conv_in.weight"),
        lambda: KeyError("unet"),
    ],
    ids=["safetensors", "oserror", "runtimeerror", "keyerror"],
)
def test_any_load_failure_is_model_unavailable_and_remembered(
    raised: Callable[[], BaseException],
) -> None:
    """Not only the engine's own EngineError: whatever a loader raises is a fact about the
    model (a corrupt weights file), answered model_unavailable and not tried again within
    MODEL_RETRY_SECONDS, instead of internal_error and a new load on every request."""
    clock = FakeClock()
    loads: list[str] = []

    def load(model_id: str) -> Pipe:
        loads.append(model_id)
        raise raised()

    cache: ModelCache[Pipe] = ModelCache(load, capacity=1, retry_seconds=60, clock=clock)
    with pytest.raises(EngineError) as first, cache.use("broken"):
        pass
    assert first.value.code is ErrorCode.MODEL_UNAVAILABLE and not first.value.transient
    assert first.value.message.startswith("model 'broken' cannot be loaded: loading it failed")
    assert type(first.value.__cause__) is type(raised())  # the original, for the log
    clock.now = 59
    with pytest.raises(EngineError) as again, cache.use("broken"):
        pass
    assert again.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert loads == ["broken"] and cache.loaded() == []
    assert (cache.stats.failed_loads, cache.stats.refused_loads) == (1, 1)
    clock.now = 61
    with pytest.raises(EngineError), cache.use("broken"):
        pass
    assert loads == ["broken", "broken"]


def test_a_load_out_of_host_memory_is_unavailable_but_not_remembered() -> None:
    loads: list[str] = []

    def load(model_id: str) -> Pipe:
        loads.append(model_id)
        if len(loads) == 1:
            raise MemoryError()
        return Pipe(model_id)

    cache: ModelCache[Pipe] = ModelCache(load, capacity=1, retry_seconds=60)
    with pytest.raises(EngineError) as info, cache.use("a"):
        pass
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE and info.value.transient
    with cache.use("a") as pipe:
        del pipe
    assert loads == ["a", "a"]


def test_an_interrupt_during_a_load_stays_an_interrupt_and_is_not_remembered() -> None:
    loads: list[str] = []

    def load(model_id: str) -> Pipe:
        loads.append(model_id)
        if len(loads) == 1:
            raise KeyboardInterrupt
        return Pipe(model_id)

    cache: ModelCache[Pipe] = ModelCache(load, capacity=1, retry_seconds=60)
    with pytest.raises(KeyboardInterrupt), cache.use("a"):
        pass
    with cache.use("a") as pipe:
        del pipe
    assert loads == ["a", "a"]
