"""The real diffusers engine on the tiny SDXL-architecture model."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from consumer.generation.engine import EngineError, GenerationJob, diffusers_engine, plan_job
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.generation.engine.jobs import request_seed
from consumer.generation.engine.loading import PipelineLoader
from consumer.generation.engine.tiny_model import ensure_tiny_model_copy
from consumer.output.images import encode_output
from consumer.settings import Settings
from schemas import Accepted, ErrorCode, parse_request

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(engine_settings: Settings) -> DiffusersEngine:
    return DiffusersEngine(engine_settings.engine_config())


def job(
    seeds: tuple[int, ...],
    request_id: str = "r1",
    steps: int = 1,
    size: int = 256,
    model: str = "tiny-sdxl",
    prompt: str = "a red fox",
) -> GenerationJob:
    return GenerationJob(
        request_id, prompt, "blurry", "standard", model, size, size, steps, 0.0, seeds
    )


def pixels(engine: DiffusersEngine, j: GenerationJob) -> list[np.ndarray]:
    return [np.asarray(im) for im in engine.generate([j], 0)[0].images]


def test_same_seed_gives_identical_png_bytes(engine: DiffusersEngine) -> None:
    first = encode_output(engine.generate([job((42,))], 0)[0])
    second = encode_output(engine.generate([job((42,))], 0)[0])
    assert first == second
    assert first[0][:8] == b"\x89PNG\r\n\x1a\n"


def test_seedless_request_planned_twice_gives_identical_png_bytes(
    engine: DiffusersEngine, engine_settings: Settings
) -> None:
    """A redelivered request without a seed must rewrite its objects with the same bytes."""
    body = {"request_id": "no-seed-1", "prompt": "a red fox", "params": {"width": 256}}

    def deliver() -> tuple[GenerationJob, list[bytes]]:
        outcome = parse_request(json.dumps(body).encode(), engine_settings.request_limits())
        assert isinstance(outcome, Accepted)
        planned = plan_job(outcome.request, "blurry")
        return planned, encode_output(engine.generate([planned], 0)[0])

    (first_job, first), (second_job, second) = deliver(), deliver()
    assert first_job.seeds == second_job.seeds == (request_seed("no-seed-1"),)
    assert first == second


def test_different_seeds_differ(engine: DiffusersEngine) -> None:
    a, b = pixels(engine, job((1,)))[0], pixels(engine, job((2,)))[0]
    assert a.shape == (256, 256, 3)
    assert not np.array_equal(a, b)


def test_each_image_of_a_request_reproduces_alone_from_its_seed(engine: DiffusersEngine) -> None:
    together = pixels(engine, job((7, 8, 9)))
    assert len(together) == 3
    for seed, image in zip((7, 8, 9), together, strict=True):
        alone = pixels(engine, job((seed,)))[0]
        # Batched kernels may round differently: within 1/255 per value (DESIGN.md).
        assert np.abs(alone.astype(int) - image.astype(int)).max() <= 1


def test_batch_of_requests_keeps_each_images_seed(engine: DiffusersEngine) -> None:
    outputs = engine.generate([job((5,), "a", prompt="cat"), job((6, 7), "b", prompt="dog")], 0)
    assert [len(o.images) for o in outputs] == [1, 2]
    alone = pixels(engine, job((6,), "b", prompt="dog"))[0]
    assert np.abs(alone.astype(int) - np.asarray(outputs[1].images[0]).astype(int)).max() <= 1


def test_timeout_stops_generation_and_the_next_call_works(engine: DiffusersEngine) -> None:
    engine.generate([job((1,))], 0)  # loaded and warm
    started = time.perf_counter()
    with pytest.raises(EngineError) as info:
        engine.generate([job((1,), steps=50, size=512)], timeout_seconds=0.001)
    assert info.value.code is ErrorCode.TIMEOUT
    assert time.perf_counter() - started < 5  # stopped early, not after 50 steps
    assert pixels(engine, job((3,)))[0].shape == (256, 256, 3)


def test_abandon_flag_stops_at_the_next_step(engine: DiffusersEngine) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(EngineError) as info:
        engine.generate([job((1,), steps=4)], 0, cancel)
    assert info.value.code is ErrorCode.GENERATION_FAILED


def test_unavailable_model_fails_fast_and_clearly(engine: DiffusersEngine) -> None:
    engine.generate([job((1,))], 0)
    started = time.perf_counter()
    with pytest.raises(EngineError) as info:
        engine.generate([job((1,), model="stabilityai/sdxl-turbo")], 0)
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "stabilityai/sdxl-turbo" in info.value.message
    assert time.perf_counter() - started < 5  # no hub retries
    assert engine.loaded_models() == ["tiny-sdxl"]  # not evicted for a model that cannot load


def test_missing_local_folder_is_unavailable(engine: DiffusersEngine, tmp_path) -> None:  # type: ignore[no-untyped-def]
    engine.generate([job((1,))], 0)
    with pytest.raises(EngineError) as info:
        engine.generate([job((1,), model=str(tmp_path / "nope"))], 0)
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert engine.loaded_models() == ["tiny-sdxl"]


def test_concurrent_first_use_loads_once(engine_settings: Settings) -> None:
    fresh = DiffusersEngine(engine_settings.engine_config())
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda s: fresh.generate([job((s,))], 0), range(3)))
    assert fresh.stats.misses == 1 and fresh.stats.hits == 2
    assert fresh.loaded_models() == ["tiny-sdxl"]
    assert fresh.purge().as_dict() == {"model_id": None, "removed": ["tiny-sdxl"], "remaining": []}


def test_two_engines_loading_at_once_leave_loading_intact(engine_settings: Settings) -> None:
    """Concurrent from_pretrained calls used to leave accelerate's meta-device patch behind."""
    engines = [DiffusersEngine(engine_settings.engine_config()) for _ in range(3)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda e: e.generate([job((1,))], 0), engines))
    later = DiffusersEngine(engine_settings.engine_config())
    assert pixels(later, job((1,)))[0].shape == (256, 256, 3)


def test_out_of_memory_while_generating_frees_the_step_and_is_out_of_memory(
    engine: DiffusersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    latents: list[weakref.ref[torch.Tensor]] = []

    def out_of_memory_at_first_step(*args: Any) -> Any:
        def on_step_end(pipe: Any, step: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            latents.append(weakref.ref(kwargs["latents"]))
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

        return on_step_end

    engine.generate([job((1,))], 0)  # loaded
    monkeypatch.setattr(diffusers_engine, "_step_guard", out_of_memory_at_first_step)
    with pytest.raises(EngineError) as info:
        engine.generate([job((1, 2, 3, 4), steps=2)], 0)
    assert info.value.code is ErrorCode.OUT_OF_MEMORY
    assert latents and latents[0]() is None  # the failed call's tensors are gone already
    monkeypatch.undo()
    assert pixels(engine, job((3,)))[0].shape == (256, 256, 3)


def test_out_of_memory_while_loading_leaves_nothing_behind(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = DiffusersEngine(engine_settings.engine_config())
    half_loaded: list[weakref.ref[Any]] = []

    def out_of_memory_moving_to_device(self: PipelineLoader, pipeline: Any) -> Any:
        half_loaded.append(weakref.ref(pipeline))
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 5.00 GiB")

    monkeypatch.setattr(PipelineLoader, "_prepare", out_of_memory_moving_to_device)
    with pytest.raises(EngineError) as info:
        fresh.generate([job((1,))], 0)
    assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert "not enough memory" in info.value.message
    assert fresh.loaded_models() == [] and half_loaded[0]() is None
    monkeypatch.undo()
    assert pixels(fresh, job((1,)))[0].shape == (256, 256, 3)  # the next request tries again


def test_a_failed_load_is_not_tried_again_within_model_retry_seconds(
    engine: DiffusersEngine, tmp_path: Path
) -> None:
    missing = job((1,), model=str(tmp_path / "not-there-yet"))
    failed, refused = engine.stats.failed_loads, engine.stats.refused_loads
    for _ in range(3):
        with pytest.raises(EngineError) as info:
            engine.generate([missing], 0)
        assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
    assert engine.stats.failed_loads - failed == 1
    assert engine.stats.refused_loads - refused == 2


def test_a_model_whose_weights_are_cut_short_is_unavailable_and_remembered(
    engine_settings: Settings, tmp_path: Path
) -> None:
    """A local folder with a truncated weights file (a copy interrupted, a full disk)."""
    broken = tmp_path / "broken"
    shutil.copytree(ensure_tiny_model_copy(engine_settings.models_dir), broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    fresh = DiffusersEngine(engine_settings.engine_config())
    for _ in range(2):
        with pytest.raises(EngineError) as info:
            fresh.generate([job((1,), model=str(broken))], 0)
        assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
        assert "its files cannot be loaded" in info.value.message
    assert (fresh.stats.failed_loads, fresh.stats.refused_loads) == (1, 1)


def test_a_text_encoder_cut_short_is_unavailable_and_remembered(
    engine_settings: Settings, tmp_path: Path
) -> None:
    """transformers lets safetensors' own error (not an OSError) out of a truncated text
    encoder: model_unavailable all the same, remembered for MODEL_RETRY_SECONDS."""
    broken = tmp_path / "broken-text-encoder"
    shutil.copytree(ensure_tiny_model_copy(engine_settings.models_dir), broken)
    weights = broken / "text_encoder" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    fresh = DiffusersEngine(engine_settings.engine_config())
    for _ in range(2):
        with pytest.raises(EngineError) as info:
            fresh.generate([job((1,), model=str(broken))], 0)
        assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
        assert "cannot be loaded" in info.value.message
    assert (fresh.stats.failed_loads, fresh.stats.refused_loads) == (1, 1)


def test_any_other_load_failure_is_model_unavailable_not_internal_error(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights that do not fit their config raise RuntimeError deep inside torch: a fact about
    the model, remembered like the others, not a bug that fails each request as internal_error."""

    def mismatched(
        self: PipelineLoader, source: str, local_only: bool, revision: str | None = None
    ) -> Any:
        raise RuntimeError("Error(s) in loading state_dict: size mismatch for conv_in.weight")

    monkeypatch.setattr(PipelineLoader, "_from_pretrained", mismatched)
    fresh = DiffusersEngine(engine_settings.engine_config())
    for _ in range(2):
        with pytest.raises(EngineError) as info:
            fresh.generate([job((1,))], 0)
        assert info.value.code is ErrorCode.MODEL_UNAVAILABLE
        assert "size mismatch" in info.value.message
    assert (fresh.stats.failed_loads, fresh.stats.refused_loads) == (1, 1)


def test_loaded_bytes_are_the_pipelines_weights(engine: DiffusersEngine) -> None:
    engine.generate([job((1,))], 0)
    facts = engine.describe()
    assert facts["loaded_models"] == ["tiny-sdxl"]
    assert facts["loaded_bytes"] == engine.stats.loaded_bytes
    assert 100_000 < engine.stats.loaded_bytes < 10_000_000  # ~1 MB of fp32 weights


def test_two_models_alternating_in_one_slot_load_each_time_never_side_by_side(
    engine_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's behaviour at the engine level: with MAX_MODELS_CACHE=1, alternating requests
    reload each time (only the worker's choice of batches can avoid that), but the previous
    pipeline is gone before the next one loads."""
    second = str(ensure_tiny_model_copy(engine_settings.models_dir))
    assert ensure_tiny_model_copy(engine_settings.models_dir) == Path(second)  # made once
    fresh = DiffusersEngine(dataclasses.replace(engine_settings.engine_config(), max_models=1))
    pipelines: list[weakref.ref[Any]] = []
    alive_at_load: list[int] = []
    real_load = PipelineLoader.__call__

    def recording_load(self: PipelineLoader, model_id: str) -> Any:
        alive_at_load.append(sum(ref() is not None for ref in pipelines))
        pipeline = real_load(self, model_id)
        pipelines.append(weakref.ref(pipeline))
        return pipeline

    monkeypatch.setattr(PipelineLoader, "__call__", recording_load)
    models = ["tiny-sdxl", second] * 3
    for model in models:
        assert pixels(fresh, job((1,), model=model))[0].shape == (256, 256, 3)
        assert fresh.loaded_models() == [model]
        assert sum(ref() is not None for ref in pipelines) == 1
    assert alive_at_load == [0] * len(models)
    assert (fresh.stats.misses, fresh.stats.hits, fresh.stats.evictions) == (6, 0, 5)
