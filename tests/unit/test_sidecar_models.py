"""GET /v1/models and /health say which engine runs: a simulated one (ENGINE=simulated) in the
answer and in each model's note, instead of the models' own notes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from consumer.generation.engine import Engine, build_engine, warmup_job
from consumer.generation.engine.catalog import SIMULATED_NOTE, TINY_MODEL_NOTE
from consumer.generation.engine.fake import FakeEngine
from consumer.ops.sidecar import SidecarConfig, build_app
from consumer.settings import Settings
from tests.unit.test_sidecar_purge import IdleWorker

MODELS = ["tiny-sdxl", "stabilityai/sdxl-turbo"]


async def get(settings: Settings, engine: Engine, path: str) -> dict[str, Any]:
    app = build_app(SidecarConfig.from_settings(settings), IdleWorker(engine))
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.get(path)
        assert response.status == 200
        answer: dict[str, Any] = await response.json()
        return answer
    finally:
        await client.close()


async def test_a_simulated_engine_is_said_in_v1_models_and_in_health(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None,
        data_dir=tmp_path,
        engine="simulated",
        simulated_load_ms=0,
        default_model="tiny-sdxl",
        allowed_models=MODELS,
    )
    engine = build_engine(settings.engine_config())
    engine.generate([warmup_job("stabilityai/sdxl-turbo", 64)], 0)
    models = await get(settings, engine, "/v1/models")
    assert models["engine"] == "simulated"
    assert models["loaded"] == ["stabilityai/sdxl-turbo"]
    assert [(d["id"], d["loaded"], d["note"]) for d in models["details"]] == [
        ("tiny-sdxl", False, SIMULATED_NOTE),
        ("stabilityai/sdxl-turbo", True, SIMULATED_NOTE),
    ]
    health = await get(settings, engine, "/health")
    assert health["engine"]["engine"] == "simulated"
    assert health["engine"]["note"] == SIMULATED_NOTE


async def test_the_real_engine_keeps_the_models_own_notes(tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, data_dir=tmp_path, default_model="tiny-sdxl", allowed_models=MODELS
    )
    models = await get(settings, FakeEngine(), "/v1/models")
    assert models["engine"] == "diffusers"
    assert [d["note"] for d in models["details"]] == [TINY_MODEL_NOTE, None]
