"""Small GPUs: the memory savers (CPU_OFFLOAD, VAE_SLICING, VAE_TILING, ATTENTION_SLICING).

The loader's wiring is checked on a fake pipeline that records what was enabled (offload
included, which needs an accelerator this host lacks); each saver that runs on the CPU is then
checked on the real tiny-sdxl pipeline for the same pixels as a plain run of the same seed, within
the tolerances that docs/operations.md ("Small GPUs") states. Here rather than in tests/unit: the
loader imports torch, which unit tests never pay for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from consumer.generation.engine import EngineError, GenerationJob
from consumer.generation.engine.config import CpuOffload, EngineConfig
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.generation.engine.loading import PipelineLoader, Placement, Tuning
from consumer.settings import Settings

pytestmark = pytest.mark.integration

# Max absolute difference, in levels of 255, from the plain run of the same seed (measured on
# this CPU over seeds 1-5 and 42: 1, 1, and at most 11 with a mean of at most 0.50 for tiling;
# the bounds leave room for other CPUs and torch builds; docs/operations.md, "Small GPUs").
ATTENTION_SLICING_MAX = 2
VAE_SLICING_MAX = 2
VAE_TILING_MAX = 16
VAE_TILING_MEAN = 1.0


class FakePart:
    def __init__(self, name: str, calls: list[tuple[str, object]]) -> None:
        self._name, self._calls = name, calls

    def to(self, **kwargs: object) -> None:
        self._calls.append((f"{self._name}.to", kwargs.get("memory_format")))

    def enable_slicing(self) -> None:
        self._calls.append((f"{self._name}.enable_slicing", None))

    def enable_tiling(self) -> None:
        self._calls.append((f"{self._name}.enable_tiling", None))


class FakePipeline:
    """Records the calls the loader makes on a pipeline, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.unet = FakePart("unet", self.calls)
        self.vae = FakePart("vae", self.calls)

    def to(self, device: str) -> FakePipeline:
        self.calls.append(("to", device))
        return self

    def enable_model_cpu_offload(self, device: str) -> None:
        self.calls.append(("enable_model_cpu_offload", device))

    def enable_sequential_cpu_offload(self, device: str) -> None:
        self.calls.append(("enable_sequential_cpu_offload", device))

    def enable_attention_slicing(self, slice_size: str | int) -> None:
        self.calls.append(("enable_attention_slicing", slice_size))

    def set_progress_bar_config(self, **kwargs: object) -> None:
        self.calls.append(("set_progress_bar_config", kwargs))


def prepared(device: str, tuning: Tuning) -> list[tuple[str, object]]:
    placement = Placement(device, torch.float16 if device == "cuda" else torch.float32)
    loader = PipelineLoader(Path("m"), placement, offline=True, probe_timeout=1, tuning=tuning)
    pipeline = FakePipeline()
    assert loader._prepare(pipeline) is pipeline
    return [(name, arg) for name, arg in pipeline.calls if not name.endswith(".to")]


@pytest.fixture
def cuda_flags() -> Iterator[None]:
    """The loader sets torch's TF32 flags for CUDA: put them back afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_without_savers_the_pipeline_is_moved_to_its_device() -> None:
    assert prepared("cpu", Tuning()) == [
        ("to", "cpu"),
        ("set_progress_bar_config", {"disable": True}),
    ]


def test_the_savers_are_enabled_after_the_move() -> None:
    tuning = Tuning(vae_slicing=True, vae_tiling=True, attention_slicing=4)
    assert prepared("cpu", tuning) == [
        ("to", "cpu"),
        ("vae.enable_slicing", None),
        ("vae.enable_tiling", None),
        ("enable_attention_slicing", 4),
        ("set_progress_bar_config", {"disable": True}),
    ]
    assert ("enable_attention_slicing", "auto") in prepared("cpu", Tuning(attention_slicing="auto"))


@pytest.mark.usefixtures("cuda_flags")
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_replaces_the_move_to_the_device(mode: CpuOffload) -> None:
    calls = prepared("cuda", Tuning(cpu_offload=mode, vae_tiling=True))
    assert calls == [
        (f"enable_{mode}_cpu_offload", "cuda"),
        ("vae.enable_tiling", None),
        ("set_progress_bar_config", {"disable": True}),
    ]


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_on_the_cpu_is_refused_when_the_engine_is_built(
    engine_settings: Settings, mode: CpuOffload
) -> None:
    placement = Placement("cpu", torch.float32)
    with pytest.raises(EngineError, match=f"CPU_OFFLOAD={mode} needs an accelerator"):
        PipelineLoader(Path("m"), placement, True, 1, Tuning(cpu_offload=mode))
    if torch.cuda.is_available():
        return  # DEVICE=auto finds the GPU: offload applies
    # DEVICE=auto on a host without an accelerator: the build fails, before any request.
    config = dataclasses.replace(engine_settings.engine_config(), device="auto", cpu_offload=mode)
    with pytest.raises(EngineError, match="needs an accelerator"):
        DiffusersEngine(config)


# --- the same pixels on the real tiny-sdxl pipeline ---------------------------------------------


@pytest.fixture(scope="module")
def config(engine_settings: Settings) -> EngineConfig:
    return engine_settings.engine_config()


@pytest.fixture(scope="module")
def plain(config: EngineConfig) -> DiffusersEngine:
    return DiffusersEngine(config)


def job(seeds: tuple[int, ...], size: int) -> GenerationJob:
    return GenerationJob(
        "r1", "a red fox", "blurry", "standard", "tiny-sdxl", size, size, 2, 0.0, seeds
    )


def differences(
    plain: DiffusersEngine, saving: DiffusersEngine, seeds: tuple[int, ...], size: int
) -> np.ndarray:
    """|saving - plain| per pixel and channel, over all the images of the same seeds."""
    [expected], [got] = (
        plain.generate([job(seeds, size)], 0),
        saving.generate([job(seeds, size)], 0),
    )
    a = np.stack([np.asarray(im, dtype=np.int16) for im in expected.images])
    b = np.stack([np.asarray(im, dtype=np.int16) for im in got.images])
    assert a.shape == b.shape == (len(seeds), size, size, 3)
    diff: np.ndarray = np.abs(a - b)
    return diff


def counting(monkeypatch: pytest.MonkeyPatch, owner: type, name: str) -> list[int]:
    """Counts the calls of `owner.name`: proof that a saver engaged, not just that it was set."""
    calls: list[int] = []
    real: Callable[..., Any] = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_attention_slicing_draws_the_same_pixels(
    plain: DiffusersEngine, config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers.models.attention_processor import SlicedAttnProcessor

    for slicing in ("auto", 1):
        saving = DiffusersEngine(dataclasses.replace(config, attention_slicing=slicing))
        sliced = counting(monkeypatch, SlicedAttnProcessor, "__call__")
        diff = differences(plain, saving, (42,), 256)
        assert sliced, "attention was not sliced"
        assert diff.max() <= ATTENTION_SLICING_MAX, (slicing, diff.max())
        monkeypatch.undo()


def test_vae_slicing_draws_the_same_pixels(
    plain: DiffusersEngine, config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import AutoencoderKL

    saving = DiffusersEngine(dataclasses.replace(config, vae_slicing=True))
    plain.generate([job((42, 7), 256)], 0)  # the plain run before the count: one decode
    decodes = counting(monkeypatch, AutoencoderKL, "_decode")
    diff = differences(plain, saving, (42, 7), 256)
    assert len(decodes) == 1 + 2, "the two images were not decoded one at a time"
    assert diff.max() <= VAE_SLICING_MAX, diff.max()


def test_vae_tiling_draws_nearly_the_same_pixels(
    plain: DiffusersEngine, config: EngineConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny VAE's tile is 512 px (its sample_size; SDXL's is 1024): at 640 px it decodes
    2 x 2 overlapping tiles, blended at the seams, each normalised on its own, so pixels near the
    seams differ a little from the untiled decode."""
    from diffusers import AutoencoderKL

    saving = DiffusersEngine(dataclasses.replace(config, vae_tiling=True))
    tiled = counting(monkeypatch, AutoencoderKL, "tiled_decode")
    diff = differences(plain, saving, (42,), 640)
    assert tiled, "the decode was not tiled"
    assert diff.max() <= VAE_TILING_MAX, diff.max()
    assert diff.mean() <= VAE_TILING_MEAN, diff.mean()
