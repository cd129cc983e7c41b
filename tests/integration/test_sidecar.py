"""The sidecar of a running worker: health, readiness, models, metrics and purge auth."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import pytest

from consumer.devtools.services import free_port
from consumer.settings import Settings
from tests.integration.kafka_tools import collect, produce, request, running_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_sidecar_routes_and_purge_auth(make_settings: Callable[..., Settings]) -> None:
    port = free_port()
    settings = make_settings(
        app_port=port,
        require_api_key=True,
        api_keys=["key-one-0123456789", "key-two-0123456789"],
        purge_min_interval_seconds=0,
    )
    from consumer.ops.sidecar import SidecarConfig, start_sidecar

    base = f"http://127.0.0.1:{port}"
    async with running_worker(settings) as worker, aiohttp.ClientSession() as http:
        runner = await start_sidecar(SidecarConfig.from_settings(settings), worker)
        try:
            await wait_until(lambda: worker.ready, 60, "partitions assigned")
            await produce(
                settings.kafka_bootstrap_servers, settings.request_topic, [request("s-1")]
            )
            assert await collect(settings.kafka_bootstrap_servers, settings.result_topic, 1)

            async with http.get(f"{base}/health") as response:
                health = await response.json()
            assert response.status == 200 and health["status"] == "ok" and health["ready"]
            assert health["broker_connected"] and health["partitions"]
            assert health["models_loaded"] == ["tiny-sdxl"]
            async with http.get(f"{base}/ready") as response:
                assert response.status == 200

            async with http.get(f"{base}/v1/models") as response:
                models = await response.json()
            assert models["default_model"] == "tiny-sdxl"
            assert "tiny-sdxl" in models["models"]
            tiny = next(d for d in models["details"] if d["id"] == "tiny-sdxl")
            assert "noise" in tiny["note"]

            async with http.get(f"{base}/metrics") as response:
                text = await response.text()
            assert 'image_generations_total{model="tiny-sdxl",status="completed"} 1.0' in text
            for name in (
                "image_generation_seconds_bucket",
                "consumer_lag",
                "batch_size_images",
                "requests_in_flight",
                "model_load_seconds",
                "model_cache_hits_total",
                "model_cache_evictions_total",
                "purge_auth_failures_total",
            ):
                assert name in text, name

            purge = f"{base}/v1/models/purge"
            async with http.post(purge, json={"model_id": "tiny-sdxl"}) as response:
                assert response.status == 401
            async with http.post(purge, headers={"X-API-Key": "wrong"}) as response:
                assert response.status == 401
            async with http.post(
                purge, headers={"X-API-Key": "key-two-0123456789"}, json={"model_id": 5}
            ) as response:
                assert response.status == 400
            async with http.post(
                purge, headers={"X-API-Key": "key-two-0123456789"}, json={"model_id": "tiny-sdxl"}
            ) as response:
                assert response.status == 200
                assert await response.json() == {
                    "model_id": "tiny-sdxl",
                    "removed": ["tiny-sdxl"],
                    "remaining": [],
                }
            async with http.post(purge, headers={"X-API-Key": "key-one-0123456789"}) as response:
                assert await response.json() == {"model_id": None, "removed": [], "remaining": []}
            async with http.get(f"{base}/metrics") as response:
                assert "purge_auth_failures_total 2.0" in await response.text()

            worker.request_stop()
            await wait_until(lambda: worker.draining, 10, "draining")
            async with http.get(f"{base}/ready") as response:
                assert response.status == 503
        finally:
            await runner.cleanup()
