"""ENGINE=simulated on the real path: the worker process (`python -m consumer run`) on the real
broker and store, its images synthetic. Requests complete with the simulated note and images of
the requested size that anyone can download, a request past GENERATION_TIMEOUT_SECONDS times out
at a step boundary, a cancel mid-generation is answered `cancelled` while its batch companion
completes, and the sidecar says the engine is simulated. Nothing here imports torch either: the
test process needs neither the diffusers engine nor the tiny model."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from consumer.client import GenerationClient
from consumer.devtools.processes import free_port
from consumer.devtools.services import create_topics
from consumer.generation.engine.catalog import SIMULATED_NOTE
from consumer.settings import Settings
from schemas import GenerationResult

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STEP_MS = 100.0
WORKER_COMMAND = ["-m", "consumer", "--env-file", "/nonexistent", "run"]


@pytest.fixture
def simulated_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Settings of a simulated worker with a sidecar, and control and progress topics of this
    test's own (created by `worker_process`)."""

    def build(**overrides: Any) -> Settings:
        suffix = make_settings().group_id  # unique to this test
        values: dict[str, Any] = {
            "engine": "simulated",
            "simulated_step_ms": STEP_MS,
            "simulated_load_ms": 200,
            "app_port": free_port(),
            "control_topic": f"control-{suffix}",
            "progress_topic": f"progress-{suffix}",
            "max_batch_size": 4,
            "max_batch_wait_ms": 50,
        }
        return make_settings(**{**values, **overrides})

    return build


@asynccontextmanager
async def worker_process(settings: Settings, log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """The worker as operators run it, once /ready answers 200; SIGTERM after, and exit 0."""
    topics = [
        settings.request_topic,
        settings.result_topic,
        settings.progress_topic,
        settings.control_topic,
    ]
    await create_topics(settings.kafka_bootstrap_servers, topics, 2)
    env = {**os.environ, **settings.to_env()}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, *WORKER_COMMAND], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        await _wait_until_ready(settings, proc, log)
        yield proc
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 60)
        assert code == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            await asyncio.to_thread(proc.wait, 30)


async def _wait_until_ready(settings: Settings, proc: subprocess.Popen[bytes], log: Path) -> None:
    url = f"http://127.0.0.1:{settings.app_port}/ready"
    deadline = time.monotonic() + 90
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                async with http.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass  # not listening yet
            await asyncio.sleep(0.2)
    tail = log.read_text()[-3000:]
    raise AssertionError(f"the worker never turned ready (exit code {proc.poll()}): {tail}")


async def sidecar(settings: Settings, path: str) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{settings.app_port}{path}") as response,
    ):
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer


def body(request_id: str, **params: Any) -> dict[str, Any]:
    return {"request_id": request_id, "prompt": "a lighthouse", "params": params}


def downloaded(result: GenerationResult) -> list[Image.Image]:
    """Each image of `result`, fetched from its URL (the store on 127.0.0.1) and decoded."""
    images: list[Image.Image] = []
    for ref in result.images:
        assert ref.url.startswith("http://127.0.0.1"), ref.url
        with urllib.request.urlopen(ref.url, timeout=10) as response:
            data = response.read()
        image = Image.open(io.BytesIO(data))
        image.load()
        images.append(image)
    return images


def assert_simulated(result: GenerationResult | None, steps: int, model: str) -> GenerationResult:
    assert result is not None, "no result"
    assert result.status == "completed", result
    assert result.audit is not None and result.audit.note == SIMULATED_NOTE
    assert result.audit.model == model
    # The one timing check: from below (a call takes at least its steps), never from above.
    assert float(result.audit.duration_sec) >= steps * STEP_MS / 1000
    return result


def libraries_mapped(pid: int) -> str:
    """The shared objects a process has mapped (Linux), to see whether it loaded torch."""
    maps = Path(f"/proc/{pid}/maps")
    return maps.read_text() if maps.exists() else ""


async def test_a_worker_process_on_the_simulated_engine_answers_with_synthetic_images(
    simulated_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = simulated_settings(generation_timeout_seconds=2)
    small: dict[str, Any] = {"width": 64, "height": 64, "steps": 2}
    # Two images of a hub model that is not cached while offline: the engine loads nothing.
    two_wide: dict[str, Any] = {"width": 1024, "height": 512, "steps": 3, "num_images": 2}
    two_wide.update(model="stabilityai/sdxl-turbo", format="webp")
    requests = {
        "small": body("small", seed=1, **small),
        "twin": body("twin", seed=1, **small),  # the same seed and size: the same pixels
        "other-seed": body("other-seed", seed=2, **small),
        "wide": body("wide", seed=5, **two_wide),
        "too-long": body("too-long", seed=3, width=64, height=64, steps=50),  # 5 s > 2 s
    }
    async with (
        worker_process(settings, tmp_path / "worker.log") as proc,
        GenerationClient(settings) as client,
    ):
        for request in requests.values():
            await client.submit(request)
        answers = {rid: await client.wait(rid, timeout=120) for rid in requests}
        models = await sidecar(settings, "/v1/models")
        health = await sidecar(settings, "/health")
        mapped = libraries_mapped(proc.pid)

    pixels = {}
    for rid in ("small", "twin", "other-seed"):
        [image] = downloaded(assert_simulated(answers[rid], 2, "tiny-sdxl"))
        assert (image.size, image.format) == ((64, 64), "PNG")
        pixels[rid] = image.tobytes()
    assert pixels["small"] == pixels["twin"] and pixels["small"] != pixels["other-seed"]

    wide = assert_simulated(answers["wide"], 3, "stabilityai/sdxl-turbo")
    assert [(ref.width, ref.height, ref.seed) for ref in wide.images] == [
        (1024, 512, 5),
        (1024, 512, 6),
    ]
    assert [(image.size, image.format) for image in downloaded(wide)] == [((1024, 512), "WEBP")] * 2

    too_long = answers["too-long"]
    assert too_long is not None and too_long.status == "timeout"
    assert too_long.error is not None and too_long.error.code == "timeout"

    assert models["engine"] == "simulated"
    assert {d["id"]: d["note"] for d in models["details"]} == {
        "tiny-sdxl": SIMULATED_NOTE,
        "stabilityai/sdxl-turbo": SIMULATED_NOTE,
    }
    assert health["engine"]["engine"] == "simulated"
    assert "libtorch" not in mapped  # the worker process never loaded torch


async def test_a_cancel_mid_generation_is_answered_cancelled_and_its_companion_completes(
    simulated_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = simulated_settings()
    slow = {"width": 256, "height": 256, "steps": 40}  # 4 s at 100 ms a step
    async with (
        worker_process(settings, tmp_path / "worker.log"),
        GenerationClient(settings) as client,
    ):
        doomed = await client.submit(body("doomed", seed=1, **slow))
        companion = await client.submit(body("companion", seed=2, **slow))
        steps = []
        async for event in client.progress(doomed):
            if event.stage == "step":
                steps.append(event)
                break  # it runs
        await client.cancel(doomed)
        cancelled = await client.wait(doomed, timeout=120)
        done = await client.wait(companion, timeout=120)
    assert steps, "no step progress before the cancel"
    assert cancelled is not None and cancelled.status == "cancelled", cancelled
    assert cancelled.error is not None and cancelled.error.code == "cancelled"
    [image] = downloaded(assert_simulated(done, 40, "tiny-sdxl"))
    assert image.size == (256, 256)
