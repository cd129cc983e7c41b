"""MODEL_REVISIONS on the real loader: a hub model pinned to a revision loads that revision from
the Hugging Face cache, not what its main branch points to, and its images say which."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.generation.engine.tiny_model import ensure_tiny_model
from consumer.settings import Settings
from storage import read_image_parameters

pytestmark = pytest.mark.integration

REPO = "acme/tiny-sdxl"  # a hub id, served from a hub cache built here
PINNED = "a" * 40  # the good snapshot
MAIN = "b" * 40  # what refs/main points to: its UNet weights are cut short


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory: pytest.TempPathFactory, engine_settings: Settings) -> Path:
    """A Hugging Face hub cache (the layout huggingface_hub writes) holding two snapshots."""
    cache = tmp_path_factory.mktemp("hub")
    repo = cache / f"models--{REPO.replace('/', '--')}"
    source = ensure_tiny_model(engine_settings.models_dir)
    for revision in (PINNED, MAIN):
        shutil.copytree(source, repo / "snapshots" / revision)
    weights = repo / "snapshots" / MAIN / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    return cache


def generate(hub_cache: Path, tmp_path: Path, revisions: str) -> tuple[int, dict[str, object]]:
    """`python -m consumer generate` with DEFAULT_MODEL=REPO, offline, on that cache."""
    env = {
        **os.environ,
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": "1",
        "DATA_DIR": str(tmp_path),
        "DEFAULT_MODEL": REPO,
        "MODEL_REVISIONS": revisions,
        "TORCH_THREADS": "2",
    }
    out = tmp_path / "out.png"
    command = [sys.executable, "-m", "consumer", "--env-file", str(tmp_path / "none.env")]
    command += ["generate", "a red fox", "--width", "64", "--height", "64", "--seed", "1"]
    done = subprocess.run(
        [*command, "--out", str(out)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.stdout, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return done.returncode, result


def test_a_pinned_hub_model_loads_its_revision_and_its_images_say_which(
    hub_cache: Path, tmp_path: Path
) -> None:
    code, result = generate(hub_cache, tmp_path, f"{REPO}={PINNED}")
    assert (code, result["status"]) == (0, "completed"), result
    parameters = read_image_parameters((tmp_path / "out.png").read_bytes())
    assert parameters["model"] == REPO and parameters["model_revision"] == PINNED


def test_unpinned_it_loads_what_main_points_to(hub_cache: Path, tmp_path: Path) -> None:
    """The control: without the pin the same cache gives the main branch's broken weights."""
    code, result = generate(hub_cache, tmp_path, "")
    assert code == 1 and result["status"] == "failed"
    assert result["error"]["code"] == "model_unavailable"  # type: ignore[index]
