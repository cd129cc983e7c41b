"""`python -m consumer generate`: a 256x256 PNG from the tiny model, byte-identical per seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from storage import format_of, read_image_parameters, read_png_parameters

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def generate(data_dir: Path, out: Path, seed: int, *extra: str) -> dict[str, object]:
    env = {**os.environ, "DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1", "TORCH_THREADS": "2"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "consumer",
            "--env-file",
            "/nonexistent",
            "generate",
            "a red fox in the snow",
            "--seed",
            str(seed),
            "--width",
            "256",
            "--height",
            "256",
            "--model",
            "tiny-sdxl",
            "--out",
            str(out),
            *extra,
        ],
        env=env,
        capture_output=True,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"noise" in done.stderr  # the user is told what tiny-sdxl draws
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_same_seed_twice_gives_identical_bytes(shared_data_dir: Path, tmp_path: Path) -> None:
    first = generate(shared_data_dir, tmp_path / "a.png", seed=1234)
    second = generate(shared_data_dir, tmp_path / "b.png", seed=1234)
    assert first["status"] == "completed"
    (image,) = first["images"]  # type: ignore[misc]
    assert image["seed"] == 1234
    assert Image.open(tmp_path / "a.png").size == (256, 256)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert read_png_parameters((tmp_path / "a.png").read_bytes())["seed"] == 1234
    assert second["status"] == "completed"


def test_out_suffix_picks_the_format(shared_data_dir: Path, tmp_path: Path) -> None:
    """Contract 1.1: `--out x.webp` writes a WebP with its parameters, at `--quality`."""
    result = generate(shared_data_dir, tmp_path / "fox.webp", 7, "--quality", "60")
    assert result["status"] == "completed"
    (image,) = result["images"]  # type: ignore[misc]
    data = (tmp_path / "fox.webp").read_bytes()
    assert (image["content_type"], image["bytes"]) == ("image/webp", len(data))
    assert format_of(data) == "webp"
    parameters = read_image_parameters(data)
    assert (parameters["seed"], parameters["format"], parameters["quality"]) == (7, "webp", 60)
