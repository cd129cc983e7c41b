"""engine/simulated.py (ENGINE=simulated): the real engine's timing, stops and bookkeeping without
a model or torch; deterministic synthetic images. Timing is only ever checked from below: a call
takes at least its steps x SIMULATED_STEP_MS, never "at most" anything (a busy box is slow)."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from consumer.generation.engine import (
    EngineConfig,
    EngineError,
    GenerationJob,
    JobOutput,
    RequestsStopped,
    build_engine,
    warmup_job,
)
from consumer.generation.engine.activity import GENERATING, LOADING
from consumer.generation.engine.catalog import SIMULATED_NOTE
from consumer.generation.engine.simulated import SimulatedEngine, draw
from consumer.output.images import (
    audit_for,
    encode_one,
    encode_output,
    look_up,
    request_digest,
    store_output,
)
from consumer.requests.decision import Stored
from consumer.settings import Settings
from schemas import ErrorCode
from storage import LocalImageStore

ROOT = Path(__file__).parents[2]


def engine(step_ms: float = 0.0, load_ms: float = 0.0, **config: Any) -> SimulatedEngine:
    built = build_engine(
        EngineConfig(
            models_dir=Path("unused"),
            engine="simulated",
            simulated_step_ms=step_ms,
            simulated_load_ms=load_ms,
            **config,
        )
    )
    assert isinstance(built, SimulatedEngine)
    return built


def job(
    request_id: str = "r",
    seeds: tuple[int, ...] = (7,),
    model: str = "stabilityai/sdxl-turbo",
    width: int = 96,
    height: int = 64,
    steps: int = 3,
) -> GenerationJob:
    return GenerationJob(
        request_id, "p", "n", "standard", model, width, height, steps, 0.0, seeds, "png"
    )


def pixels(image: Image.Image) -> bytes:
    return image.tobytes()


# --- images -----------------------------------------------------------------------------------


def test_the_same_seed_and_size_give_the_same_image_and_other_seeds_other_ones() -> None:
    first = draw(7, 96, 64)
    assert (first.size, first.mode) == ((96, 64), "RGB")
    assert pixels(draw(7, 96, 64)) == pixels(first)
    assert all(pixels(draw(seed, 96, 64)) != pixels(first) for seed in (0, 6, 8, 2**63 - 1))
    assert draw(7, 64, 96).size == (64, 96)  # width x height, not the other way round


def test_an_image_is_the_same_alone_and_in_a_batch_and_encodes_to_the_same_bytes() -> None:
    simulated = engine()
    [alone] = simulated.generate([job("a", seeds=(5,))], 0)
    together = simulated.generate([job("b", seeds=(4, 5)), job("a", seeds=(5,))], 0)
    assert [len(output.images) for output in together] == [2, 1]
    assert pixels(together[0].images[1]) == pixels(alone.images[0])
    assert pixels(together[0].images[0]) != pixels(alone.images[0])
    again = simulated.generate([job("a", seeds=(5,))], 0)[0]
    assert encode_one(again, 0) == encode_one(alone, 0)  # the same request: the same PNG bytes


def test_images_are_cheap_and_compress_about_as_a_photograph_does() -> None:
    image = draw(1, 1024, 1024)
    values = np.asarray(image)
    assert values.std() > 5  # not one flat colour
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1)
    assert 0.3 < len(buffer.getvalue()) / values.size < 0.9  # neither a flat colour nor noise


# --- time -------------------------------------------------------------------------------------


def test_a_call_takes_at_least_its_steps_for_the_whole_batch() -> None:
    simulated = engine(step_ms=20)
    jobs = [job("a", seeds=(1, 2)), job("b", seeds=(3,))]
    started = time.perf_counter()
    outputs = simulated.generate(jobs, 0)
    took = time.perf_counter() - started
    assert took >= 3 * 0.020 and outputs[0].duration_sec >= 3 * 0.020
    assert outputs[0].duration_sec == outputs[1].duration_sec  # one call for the whole batch


def test_a_load_takes_its_time_and_is_watched_as_a_load() -> None:
    simulated = engine(load_ms=300)
    seen: set[str] = set()
    call = threading.Thread(target=simulated.generate, args=([job(steps=1)], 0))
    call.start()
    while call.is_alive():
        seen.update(phase.name for phase in simulated.activity.snapshot())
        time.sleep(0.002)
    call.join()
    assert LOADING in seen
    assert simulated.stats.load_seconds["stabilityai/sdxl-turbo"] >= 0.3
    assert simulated.activity.snapshot() == []


# --- stops at step boundaries -----------------------------------------------------------------


def test_the_step_hook_runs_after_each_step_inside_the_generating_phase() -> None:
    simulated = engine(step_ms=1)
    calls: list[tuple[int, int, list[str]]] = []

    def on_step(step: int, total: int) -> None:
        calls.append((step, total, [phase.name for phase in simulated.activity.snapshot()]))

    simulated.generate([job(steps=4)], 0, on_step=on_step)
    assert calls == [(step, 4, [GENERATING]) for step in (1, 2, 3, 4)]


def test_requests_stopped_by_the_step_hook_end_the_call_at_that_step() -> None:
    simulated = engine()
    seen: list[int] = []

    def on_step(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            raise RequestsStopped({"r": ErrorCode.CANCELLED})

    with pytest.raises(RequestsStopped) as stopped:
        simulated.generate([job(steps=10)], 0, on_step=on_step)
    assert stopped.value.codes == {"r": ErrorCode.CANCELLED} and seen == [1, 2]
    assert simulated.generate([job(steps=1)], 0)  # usable after it


def test_a_cancel_is_answered_at_the_next_step_boundary() -> None:
    simulated = engine()
    cancel, seen = threading.Event(), []

    def on_step(step: int, total: int) -> None:
        seen.append(step)
        if step == 2:
            cancel.set()  # as the worker abandoning the batch, during step 3

    with pytest.raises(EngineError) as failed:
        simulated.generate([job(steps=10)], 0, cancel, on_step)
    assert failed.value.code is ErrorCode.GENERATION_FAILED
    assert "abandoned" in failed.value.message and seen == [1, 2]


def test_the_timeout_is_checked_at_step_boundaries() -> None:
    simulated = engine(step_ms=20)
    seen: list[int] = []
    with pytest.raises(EngineError) as failed:
        simulated.generate([job(steps=50)], 0.05, on_step=lambda step, total: seen.append(step))
    assert failed.value.code is ErrorCode.TIMEOUT
    assert "GENERATION_TIMEOUT_SECONDS=0.05" in failed.value.message
    # Step k ends no earlier than k x 20 ms: by step 3 the 50 ms have passed.
    assert 1 <= len(seen) <= 2
    assert simulated.activity.snapshot() == []


# --- models, the cache, what it says of itself ------------------------------------------------


def test_every_model_id_is_accepted_and_kept_in_the_cache() -> None:
    simulated = engine(max_models=2)
    for model in ("tiny-sdxl", "stabilityai/sdxl-turbo", "tiny-sdxl", "./no/such/folder"):
        [output] = simulated.generate([job(model=model, steps=1)], 0)
        assert output.images
    assert simulated.loaded_models() == ["tiny-sdxl", "./no/such/folder"]  # LRU first
    stats = simulated.stats
    assert (stats.misses, stats.hits, stats.evictions, stats.failed_loads) == (3, 1, 1, 0)
    assert simulated.purge().removed == ["tiny-sdxl", "./no/such/folder"]
    assert simulated.loaded_models() == []


def test_it_says_it_is_simulated_in_describe_and_in_each_audit() -> None:
    simulated = engine(step_ms=5, load_ms=7)
    described = simulated.describe()
    assert described["engine"] == "simulated" and described["device"] == "none"
    assert (described["step_ms"], described["load_ms"]) == (5, 7)
    [output] = simulated.generate([warmup_job("tiny-sdxl", 64)], 0)
    assert output.note == SIMULATED_NOTE
    audit = audit_for(output)
    assert audit.note == SIMULATED_NOTE  # not tiny-sdxl's note: no tiny-sdxl ran
    assert audit.model == "tiny-sdxl"


def test_a_batch_must_share_its_key() -> None:
    with pytest.raises(ValueError, match="batch"):
        engine().generate([job("a", width=64), job("b", width=128)], 0)


def test_the_settings_choose_it() -> None:
    settings = Settings(
        _env_file=None,
        engine="simulated",
        simulated_step_ms=25,
        simulated_load_ms=0,
    )
    config = settings.engine_config()
    assert (config.engine, config.simulated_step_ms, config.simulated_load_ms) == (
        "simulated",
        25,
        0,
    )
    assert isinstance(build_engine(config), SimulatedEngine)
    assert Settings(_env_file=None).engine_config().engine == "diffusers"
    with pytest.raises(ValueError, match="simulated_step_ms"):
        EngineConfig(models_dir=Path("m"), simulated_step_ms=-1)


_NO_TORCH = """
import sys
from consumer.settings import Settings
from consumer.generation.engine import build_engine, warmup_job
from consumer.output.images import encode_output
import consumer.app, consumer.worker, consumer.ops.sidecar  # what a worker process imports

settings = Settings(_env_file=None, engine="simulated", simulated_step_ms=1, simulated_load_ms=0)
engine = build_engine(settings.engine_config())
[output] = engine.generate([warmup_job("stabilityai/sdxl-turbo", 256)], 0)
assert encode_output(output) and engine.describe()["engine"] == "simulated"
heavy = sorted(name for name in ("torch", "diffusers", "transformers") if name in sys.modules)
print("imported:", heavy)
sys.exit(1 if heavy else 0)
"""


def test_the_simulated_engine_never_imports_torch() -> None:
    """In a fresh interpreter: the worker's modules imported, the engine built from the settings
    and run, an image encoded; torch, diffusers and transformers never imported."""
    done = subprocess.run(
        [sys.executable, "-c", _NO_TORCH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported: []" in done.stdout


def test_synthetic_images_never_answer_a_real_request_nor_the_other_way(tmp_path: Path) -> None:
    """Images drawn by the simulated engine embed it and count it in their digests: a real
    worker finding them under a request's id refuses (request_id_conflict) instead of serving
    synthetic images as a real model's, and a simulated worker does the same with real ones."""
    real = GenerationJob("r-1", "p", "n", "standard", "m", 64, 64, 1, 0.0, (1,))
    synthetic = replace(real, synthetic=True)
    assert request_digest(real) != request_digest(synthetic)
    store = LocalImageStore(tmp_path)
    output = JobOutput(synthetic, [draw(1, 64, 64)], 0.1)
    store_output(output, encode_output(output), store, "images")
    listed = store.keys_in("images/r-1", 10)
    assert look_up(synthetic, store, "images", listed)[0] is Stored.SAME
    assert look_up(real, store, "images", listed)[0] is Stored.OTHER
