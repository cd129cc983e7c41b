"""GenerationClient against the real embedded broker. No worker runs: the test plays its part,
reading the request and publishing progress events and a result itself."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from consumer.client import GenerationClient
from consumer.settings import Settings
from schemas import CancelCommand, ErrorCode, GenerationResult, parse_control, progress_event
from schemas.cloudevents import CONTROL_TYPE, REQUEST_TYPE
from tests.integration.kafka_tools import collect, produce

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def settings(contract_settings: Settings) -> Settings:
    return contract_settings


def headers_of(record: Any) -> dict[str, bytes]:
    return dict(record.headers or ())


async def publish_progress(settings: Settings, request_id: str) -> None:
    """The progress events a worker would publish, between those of another request."""
    bootstrap = settings.kafka_bootstrap_servers
    events = [
        progress_event("someone-else", "queued"),
        progress_event(request_id, "queued"),
        progress_event(request_id, "started", total_steps=2),
        progress_event(request_id, "step", step=1, total_steps=2),
        progress_event(request_id, "step", step=2, total_steps=2),
        progress_event(request_id, "finished"),
    ]
    for event in events:
        value = event.model_dump_json().encode()
        await produce(bootstrap, settings.progress_topic, [value], key=event.request_id.encode())


async def publish_result(settings: Settings, request_id: str) -> None:
    """An `expired` result for `request_id`, after garbage and another request's result."""
    bootstrap = settings.kafka_bootstrap_servers
    await produce(bootstrap, settings.result_topic, [b"not json"], key=request_id.encode())
    other = GenerationResult.failed("someone-else", ErrorCode.CANCELLED)
    await produce(
        bootstrap, settings.result_topic, [other.model_dump_json().encode()], key=b"someone-else"
    )
    result = GenerationResult.failed(request_id, ErrorCode.DEADLINE_EXCEEDED)
    await produce(
        bootstrap,
        settings.result_topic,
        [result.model_dump_json().encode()],
        key=request_id.encode(),
    )


async def test_submit_then_progress_and_wait(settings: Settings) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    async with GenerationClient(settings, source="urn:sdxl-worker:client:test") as client:
        request_id = await client.submit(
            {"prompt": "a lighthouse", "params": {"format": "webp"}},
            headers=[("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")],
        )
        [record] = await collect(bootstrap, settings.request_topic, 1, timeout=30)
        assert record.key == request_id.encode()
        assert json.loads(record.value) == {
            "request_id": request_id,
            "prompt": "a lighthouse",
            "params": {"format": "webp"},
        }
        headers = headers_of(record)
        assert headers["ce_type"] == REQUEST_TYPE.encode()
        assert headers["ce_subject"] == request_id.encode()
        assert headers["ce_source"] == b"urn:sdxl-worker:client:test"
        assert headers["traceparent"].startswith(b"00-4bf9")

        stages = asyncio.create_task(_stages(client, request_id))
        await publish_progress(settings, request_id)
        # Progress and results are separate topics, fetched in no fixed order: the result only
        # once the iterator ended at `finished`, so the whole sequence is checked.
        seen = await asyncio.wait_for(stages, 30)
        await publish_result(settings, request_id)
        result = await client.wait(request_id, timeout=30)
        assert result is not None
        assert (result.request_id, result.status) == (request_id, "expired")
        assert seen == [
            ("queued", None),
            ("started", None),
            ("step", 1),
            ("step", 2),
            ("finished", None),
        ]


async def _stages(client: GenerationClient, request_id: str) -> list[tuple[str, int | None]]:
    return [(event.stage, event.step) async for event in client.progress(request_id)]


async def test_wait_gives_up_after_its_timeout(settings: Settings) -> None:
    async with GenerationClient(settings) as client:
        request_id = await client.submit({"request_id": "lonely-1", "prompt": "nobody answers"})
        assert request_id == "lonely-1"
        assert await client.wait(request_id, timeout=1.0) is None


async def test_cancel_lands_on_the_control_topic(settings: Settings) -> None:
    async with GenerationClient(settings, listen=False) as client:
        await client.cancel("req-to-cancel")
        with pytest.raises(RuntimeError):
            await client.wait("req-to-cancel", 1)
    [record] = await collect(settings.kafka_bootstrap_servers, settings.control_topic, 1, 30)
    assert record.key == b"req-to-cancel"
    assert json.loads(record.value) == {"type": "cancel", "request_id": "req-to-cancel"}
    assert parse_control(record.value) == CancelCommand(request_id="req-to-cancel")
    assert headers_of(record)["ce_type"] == CONTROL_TYPE.encode()


async def output_until(
    capsys: pytest.CaptureFixture[str], text: str, timeout: float = 30.0
) -> tuple[str, str]:
    out = err = ""
    async with asyncio.timeout(timeout):
        while text not in err:
            captured = capsys.readouterr()
            out, err = out + captured.out, err + captured.err
            await asyncio.sleep(0.1)
    return out, err


def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)  # no developer .env
    for name in ("kafka_bootstrap_servers", "request_topic", "result_topic"):
        monkeypatch.setenv(name.upper(), str(getattr(settings, name)))
    monkeypatch.setenv("PROGRESS_TOPIC", settings.progress_topic)
    monkeypatch.setenv("CONTROL_TOPIC", settings.control_topic)
    monkeypatch.setenv("KAFKA_FETCH_MAX_WAIT_MS", str(settings.kafka_fetch_max_wait_ms))


async def test_cli_submit_with_progress_prints_plain_lines_off_a_terminal(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    from consumer.__main__ import main

    cli_env(monkeypatch, settings, tmp_path)
    argv = ["submit", "a lighthouse", "--request-id", "cli-progress-1", "--progress"]
    argv += ["--wait", "60", "--format", "jpeg", "--quality", "70"]
    command = asyncio.create_task(asyncio.to_thread(main, argv))
    [record] = await collect(settings.kafka_bootstrap_servers, settings.request_topic, 1, 30)
    assert json.loads(record.value)["params"]["format"] == "jpeg"
    await publish_progress(settings, "cli-progress-1")
    out, err = await output_until(capsys, "progress: finished")
    await publish_result(settings, "cli-progress-1")
    assert await asyncio.wait_for(command, 60) == 1  # expired is not completed
    more_out, more_err = capsys.readouterr()
    out, err = out + more_out, err + more_err
    assert json.loads(out)["status"] == "expired"
    lines = [line.split(" (")[0] for line in err.splitlines() if line.startswith("progress:")]
    assert lines == [
        "progress: queued",
        "progress: started",
        "progress: step 1/2",
        "progress: step 2/2",
        "progress: finished",
    ]


async def test_cli_cancel(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Any,
) -> None:
    from consumer.__main__ import main

    cli_env(monkeypatch, settings, tmp_path)
    assert await asyncio.to_thread(main, ["cancel", "cli-cancel-1"]) == 0
    assert settings.control_topic in capsys.readouterr().err
    [record] = await collect(settings.kafka_bootstrap_servers, settings.control_topic, 1, 30)
    assert parse_control(record.value) == CancelCommand(request_id="cli-cancel-1")
    assert await asyncio.to_thread(main, ["cancel", "../etc"]) == 2  # not a request_id
