"""The tiny offline SDXL model: reproducible files, loads like a real folder, deterministic."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub from these tests

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from consumer.generation.engine.tiny_model import (  # noqa: E402  (after the skips: needs torch + diffusers)
    MARKER_FILENAME,
    TINY_MODEL_DIRNAME,
    build_tiny_pipeline,
    ensure_tiny_model,
)

pytestmark = pytest.mark.integration


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _generate(pipe: Any, seed: int, size: int = 256) -> Any:
    generator = torch.Generator("cpu").manual_seed(seed)
    result = pipe(
        "a photo of a cat",
        num_inference_steps=1,
        guidance_scale=0.0,
        height=size,
        width=size,
        generator=generator,
    )
    return result.images[0]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("models")
    ensure_tiny_model(directory)
    return directory


@pytest.fixture(scope="module")
def pipe(models_dir: Path) -> Any:
    loaded = diffusers.AutoPipelineForText2Image.from_pretrained(
        models_dir / TINY_MODEL_DIRNAME,
        dtype=torch.float32,
        use_safetensors=True,
        local_files_only=True,
    )
    loaded.set_progress_bar_config(disable=True)
    return loaded


def test_two_builds_are_byte_identical(models_dir: Path, tmp_path: Path) -> None:
    second = ensure_tiny_model(tmp_path)
    first_files = _files(models_dir / TINY_MODEL_DIRNAME)
    assert first_files == _files(second)
    assert any(name.endswith(".safetensors") for name in first_files)


def test_folder_has_sdxl_layout_and_marker(models_dir: Path) -> None:
    folder = models_dir / TINY_MODEL_DIRNAME
    for part in ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"):
        assert (folder / part).is_dir(), part
    for part in ("tokenizer", "tokenizer_2"):
        for name in ("tokenizer.json", "vocab.json", "merges.txt"):
            assert (folder / part / name).is_file(), f"{part}/{name}"
    assert "draws noise" in (folder / MARKER_FILENAME).read_text(encoding="utf-8")
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total < 2_000_000, "the tiny model should stay tiny"


def test_loads_as_sdxl_and_generates_256(pipe: Any) -> None:
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert pipe.tokenizer.model_max_length == 77
    assert pipe.vae_scale_factor == 8
    image = _generate(pipe, seed=1)
    assert image.size == (256, 256)


def test_vocab_files_load_with_clip_tokenizer(models_dir: Path, pipe: Any) -> None:
    from transformers import CLIPTokenizer

    folder = models_dir / TINY_MODEL_DIRNAME / "tokenizer"
    from_files = CLIPTokenizer(
        vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77
    )
    prompt = "An astronaut riding a horse, 4k!"
    assert from_files(prompt).input_ids == pipe.tokenizer(prompt).input_ids
    ids = pipe.tokenizer(prompt).input_ids
    assert ids[0] == pipe.text_encoder.config.bos_token_id
    assert ids[-1] == pipe.text_encoder.config.eos_token_id


def test_same_seed_same_pixels_different_seed_different(pipe: Any) -> None:
    first = _generate(pipe, seed=42).tobytes()
    assert _generate(pipe, seed=42).tobytes() == first
    assert _generate(pipe, seed=43).tobytes() != first


def test_in_memory_pipeline_matches_saved_one(pipe: Any) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    in_memory = build_tiny_pipeline()
    assert torch.equal(torch.rand(3), expected), "building must not reseed the caller's RNG"
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        saved = getattr(pipe, part).state_dict()
        built = getattr(in_memory, part).state_dict()
        assert saved.keys() == built.keys(), part
        assert all(torch.equal(built[key], saved[key]) for key in built), part
    # Same weights, but not the same pixels bit for bit: weights mapped from safetensors sit at
    # other memory alignments than fresh ones, so CPU kernels round differently (~1e-7).
    in_memory.set_progress_bar_config(disable=True)
    fresh = numpy.asarray(_generate(in_memory, seed=7), dtype=numpy.int16)
    loaded = numpy.asarray(_generate(pipe, seed=7), dtype=numpy.int16)
    assert numpy.abs(fresh - loaded).max() <= 1


def test_ensure_is_idempotent_and_leaves_no_temp_folders(models_dir: Path) -> None:
    folder = models_dir / TINY_MODEL_DIRNAME
    before = _files(folder)
    mtime = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_model(models_dir) == folder
    assert _files(folder) == before
    assert (folder / "model_index.json").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in models_dir.iterdir()) == [TINY_MODEL_DIRNAME]


def test_losing_a_race_keeps_the_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that finishes second must drop its own build and return the existing folder."""
    import consumer.generation.engine.tiny_model as tiny_model

    winner = ensure_tiny_model(tmp_path)
    real_is_complete = tiny_model._is_complete
    calls: list[Path] = []

    def not_yet_then_real(folder: Path) -> bool:
        calls.append(folder)
        return False if len(calls) == 1 else real_is_complete(folder)  # first check: "missing"

    monkeypatch.setattr(tiny_model, "_is_complete", not_yet_then_real)
    assert ensure_tiny_model(tmp_path) == winner
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [TINY_MODEL_DIRNAME]
