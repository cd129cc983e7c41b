"""Contract 1.1 end to end on a real worker, broker, store and the tiny diffusers model:
deadlines, cancel (while running and before arrival), progress, output formats, CloudEvents
headers and trace context."""

from __future__ import annotations

import asyncio
import io
import json
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from PIL import Image

from consumer.client import GenerationClient
from consumer.settings import Settings
from schemas import GenerationResult
from storage import read_image_parameters
from tests.integration.kafka_tools import collect, running_worker, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def settings(contract_settings: Settings) -> Settings:
    return contract_settings


def body(request_id: str, **params: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "prompt": "a lighthouse",
        "params": {"width": 256, "height": 256, **params},
    }


async def test_a_request_past_its_deadline_expires_without_a_generation(settings: Settings) -> None:
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
    async with GenerationClient(settings) as client, running_worker(settings) as worker:
        late = await client.submit({**body("late"), "deadline": past})
        on_time = await client.submit(body("on-time", seed=1))
        expired = await client.wait(late, timeout=120)
        completed = await client.wait(on_time, timeout=120)
        metrics = worker.metrics
    assert expired is not None and expired.status == "expired"
    assert expired.error is not None and expired.error.code == "deadline_exceeded"
    assert completed is not None and completed.status == "completed"
    model = settings.default_model
    assert metrics.generations.labels("expired", model)._value.get() == 1
    assert metrics.generation_seconds.labels(model)._sum.get() > 0  # only the on-time one ran


async def test_a_cancel_stops_a_running_request_and_its_batch_companion_completes(
    settings: Settings,
) -> None:
    slow = {"steps": 40, "width": 512, "height": 512}  # seconds of work on this CPU
    async with GenerationClient(settings) as client, running_worker(settings) as worker:
        await wait_until(lambda: worker.ready, 60, "the worker ready")
        doomed = await client.submit(body("doomed", seed=1, **slow))
        companion = await client.submit(body("companion", seed=2, **slow))
        async for event in client.progress(doomed):
            if event.stage == "step":
                break  # it runs
        cancelled_at = time.monotonic()
        await client.cancel(doomed)
        cancelled = await client.wait(doomed, timeout=120)
        took = time.monotonic() - cancelled_at
        done = await client.wait(companion, timeout=120)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert cancelled.error is not None and cancelled.error.code == "cancelled"
    assert took < 10, f"the cancel took {took:.1f}s"
    assert done is not None and done.status == "completed" and len(done.images) == 1


async def test_a_cancel_sent_before_its_request_is_honoured(settings: Settings) -> None:
    async with GenerationClient(settings) as client:
        await client.cancel("early")
        async with running_worker(settings):
            await asyncio.sleep(2)  # the worker reads the control topic back from its start
            await client.submit(body("early"))
            result = await client.wait("early", timeout=120)
    assert result is not None and result.status == "cancelled"


async def test_progress_webp_cloudevents_and_trace_context(settings: Settings) -> None:
    headers = [("traceparent", TRACEPARENT)]
    async with GenerationClient(settings) as client, running_worker(settings):
        request_id = await client.submit(
            body("webp", seed=3, steps=3, format="webp", quality=80), headers=headers
        )
        stages = [event.stage async for event in client.progress(request_id)]
        result = await client.wait(request_id, timeout=120)
    assert result is not None and result.status == "completed", result
    assert stages[0] == "queued" and "started" in stages and stages[-1] in ("step", "finished")
    assert "step" in stages
    (image,) = result.images
    assert image.key.endswith(".webp") and image.content_type == "image/webp"
    with urllib.request.urlopen(image.url, timeout=10) as response:
        assert response.headers["Content-Type"] == "image/webp"
        data = response.read()
    assert Image.open(io.BytesIO(data)).format == "WEBP" and len(data) == image.bytes
    assert read_image_parameters(data)["seed"] == 3
    (record,) = [
        r for r in await collect(settings.kafka_bootstrap_servers, settings.result_topic, 1)
    ]
    got = dict(record.headers)
    assert got["ce_specversion"] == b"1.0" and got["ce_type"] == b"generation.result.v1"
    assert got["ce_subject"] == b"webp" and got["content-type"] == b"application/json"
    assert got["traceparent"] == TRACEPARENT
    progress = await collect(settings.kafka_bootstrap_servers, settings.progress_topic, 3)
    assert all(dict(r.headers).get("traceparent") == TRACEPARENT for r in progress)
    assert GenerationResult.model_validate_json(record.value).request_id == "webp"
    assert json.loads(progress[0].value)["stage"] == "queued"
