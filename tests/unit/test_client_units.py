"""GenerationClient without a broker: what it imports, how it encodes requests, how it hands
out results and progress, and the CLI's progress lines."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from consumer.client.generation_client import MAX_WATCHES, GenerationClient, _encode_request
from consumer.client.submit import render_progress
from consumer.settings import Settings
from schemas import ErrorCode, GenerationRequest, GenerationResult, progress_event

MOMENT = datetime(2026, 5, 1, 12, tzinfo=UTC)


def test_the_client_imports_neither_torch_nor_diffusers() -> None:
    code = (
        "import sys, consumer.client.generation_client, consumer.client.submit; "
        "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_mapping_is_sent_as_given_with_an_id_when_it_has_none() -> None:
    request_id, value = _encode_request({"prompt": "p", "params": {"format": "webp"}})
    assert request_id.startswith("req-") and len(request_id) == 36
    assert json.loads(value) == {
        "prompt": "p",
        "params": {"format": "webp"},
        "request_id": request_id,
    }
    assert _encode_request({"request_id": "mine", "prompt": "p"})[0] == "mine"
    with pytest.raises(ValueError):
        _encode_request({"request_id": 5, "prompt": "p"})


def test_a_model_leaves_the_worker_its_defaults() -> None:
    request = GenerationRequest.model_validate(
        {
            "request_id": "r1",
            "prompt": "p",
            "deadline": "2026-05-01T14:00:00+02:00",
            "params": {"format": "jpeg"},
        }
    )
    request_id, value = _encode_request(request)
    # No model (the worker's DEFAULT_MODEL decides), no width; the deadline keeps its offset.
    assert (request_id, json.loads(value)) == (
        "r1",
        {
            "request_id": "r1",
            "prompt": "p",
            "deadline": "2026-05-01T14:00:00+02:00",
            "params": {"format": "jpeg"},
        },
    )


def test_progress_lines() -> None:
    step = progress_event("r", "step", step=3, total_steps=8, now=MOMENT)
    assert render_progress(step, 4.25, bar=False) == "progress: step 3/8 (4.2s)"
    assert render_progress(progress_event("r", "queued"), 0.1, bar=False) == (
        "progress: queued (0.1s)"
    )
    assert render_progress(step, 4.25, bar=True) == "[#########...............] 3/8 steps      4.2s"
    done = render_progress(progress_event("r", "finished"), 5.0, bar=True)
    assert done.startswith("[" + "#" * 24 + "] finished")


# --- results and progress, fed as the reader would feed them ---------------------------------


def record(topic: str, key: str, value: bytes) -> Any:
    return SimpleNamespace(topic=topic, key=key.encode(), value=value, offset=0)


class Fed:
    """A client whose reader is replaced by `feed`: no broker, same hand-out logic."""

    def __init__(self) -> None:
        self.settings = Settings(_env_file=None)  # type: ignore[call-arg]
        self.client = GenerationClient(self.settings, listen=True)

    async def __aenter__(self) -> Fed:
        self.client._reader = asyncio.create_task(asyncio.sleep(3600))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.client._reader is not None
        self.client._reader.cancel()

    async def feed(self, *records: Any) -> None:
        for rec in records:
            if rec.topic == self.settings.result_topic:
                self.client._on_result(rec)
            else:
                self.client._on_progress(rec)
        async with self.client._changed:
            self.client._changed.notify_all()

    def result(self, request_id: str) -> Any:
        value = GenerationResult.failed(request_id, ErrorCode.CANCELLED).model_dump_json()
        return record(self.settings.result_topic, request_id, value.encode())

    def progress(self, request_id: str, stage: Any, **steps: Any) -> Any:
        event = progress_event(request_id, stage, now=MOMENT, **steps)
        return record(self.settings.progress_topic, request_id, event.model_dump_json().encode())


async def test_wait_hands_out_a_result_that_came_first_once() -> None:
    async with Fed() as fed:
        fed.client.watch("r1")
        await fed.feed(fed.result("r1"), fed.result("not-watched"))
        result = await fed.client.wait("r1", timeout=1)
        assert result is not None and result.status == "cancelled"
        assert "not-watched" not in fed.client._watches and "r1" not in fed.client._watches


async def test_garbage_on_the_result_topic_is_skipped() -> None:
    async with Fed() as fed:
        fed.client.watch("r1")
        garbage = record(fed.settings.result_topic, "r1", b"{not json")
        await fed.feed(garbage)
        assert await fed.client.wait("r1", timeout=0.2) is None
        await fed.feed(fed.result("r1"))
        assert await fed.client.wait("r1", timeout=1) is not None


async def test_progress_ends_at_finished() -> None:
    async with Fed() as fed:
        fed.client.watch("r1")
        await fed.feed(
            fed.progress("r1", "queued"),
            fed.progress("other", "queued"),
            record(fed.settings.progress_topic, "r1", b"garbage"),
            fed.progress("r1", "step", step=1, total_steps=2),
            fed.progress("r1", "finished"),
            fed.progress("r1", "queued"),  # a redelivery's: after finished, not shown
        )
        stages = [e.stage async for e in fed.client.progress("r1")]
        assert stages == ["queued", "step", "finished"]


async def test_progress_ends_when_the_result_arrives_without_finished() -> None:
    async with Fed() as fed:
        fed.client.watch("r1")
        events = asyncio.create_task(_stages(fed.client, "r1"))
        await fed.feed(fed.progress("r1", "queued"))
        await asyncio.sleep(0.05)
        await fed.feed(fed.progress("r1", "started"), fed.result("r1"))
        assert await asyncio.wait_for(events, 1) == ["queued", "started"]


async def _stages(client: GenerationClient, request_id: str) -> list[str]:
    return [e.stage async for e in client.progress(request_id)]


async def test_watches_are_bounded() -> None:
    async with Fed() as fed:
        for index in range(MAX_WATCHES + 5):
            fed.client.watch(f"r{index}")
        assert len(fed.client._watches) == MAX_WATCHES and "r0" not in fed.client._watches


async def test_a_send_only_client_refuses_to_wait() -> None:
    client = GenerationClient(Settings(_env_file=None), listen=False)  # type: ignore[call-arg]
    with pytest.raises(RuntimeError):
        await client.wait("r1", 0.1)
    with pytest.raises(RuntimeError):
        await client.submit({"prompt": "p"})  # not started
