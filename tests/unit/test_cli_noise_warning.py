"""`python -m consumer submit` warns that the images are noise only for tiny-sdxl's results: a real
model's result answered from the store carries an `audit.note` too, and its images are fine."""

from __future__ import annotations

from pathlib import Path

import pytest

import consumer.client.submit
from consumer.__main__ import NOISE_WARNING, main
from consumer.generation.engine.catalog import TINY_MODEL_ID, TINY_MODEL_NOTE
from consumer.output.images import STORED_NOTE
from schemas import Audit, GenerationResult, ImageRef


def completed(model: str, note: str | None) -> GenerationResult:
    image = ImageRef(
        image_id="im_5a1d3cc4a099",
        url="http://store/r1/0.png",
        seed=1,
        key="r1/0.png",
        width=64,
        height=64,
    )
    audit = Audit(policy="standard", duration_sec="0.000", model=model, note=note)
    return GenerationResult(request_id="r1", status="completed", images=[image], audit=audit)


def submit_stderr(
    result: GenerationResult,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> str:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    monkeypatch.setattr(consumer.client.submit, "run_submit", lambda *args, **kwargs: result)
    assert main(["submit", "a lighthouse"]) == 0
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "note", [STORED_NOTE, f"{STORED_NOTE}; a note of the model's own"], ids=["stored", "both"]
)
def test_a_real_model_s_result_with_a_note_is_not_called_noise(
    note: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = completed("stabilityai/sdxl-turbo", note)
    assert NOISE_WARNING not in submit_stderr(result, tmp_path, monkeypatch, capsys)


@pytest.mark.parametrize(
    "note", [TINY_MODEL_NOTE, f"{STORED_NOTE}; {TINY_MODEL_NOTE}"], ids=["fresh", "stored"]
)
def test_a_tiny_sdxl_result_is_called_noise(
    note: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = completed(TINY_MODEL_ID, note)
    assert NOISE_WARNING in submit_stderr(result, tmp_path, monkeypatch, capsys)
