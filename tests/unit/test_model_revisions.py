"""MODEL_REVISIONS: parsed and checked against the allowlist, planned into each job of a pinned
hub model, embedded in its images and their digests, shown in /v1/models; the digests of jobs
without a revision are what they were, so images stored before pins stay valid."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from consumer.generation.engine import GenerationJob, plan_job
from consumer.generation.engine.fake import FakeEngine
from consumer.ops.sidecar import SidecarConfig, build_app
from consumer.output.images import image_metadata, image_parameters, request_digest
from consumer.settings import Settings
from schemas import Accepted, RequestLimits, parse_request
from storage import read_image_parameters
from tests.unit.harness import TOPIC, Harness, event, running

SHA = "0123456789abcdef0123456789abcdef01234567"
TURBO = "stabilityai/sdxl-turbo"


def make(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_revisions_from_a_comma_list_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert make().model_revisions == {}
    monkeypatch.setenv("ALLOWED_MODELS", "tiny-sdxl,other/model")
    monkeypatch.setenv("MODEL_REVISIONS", f" {TURBO}={SHA}, other/model = v1.0 ,")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.model_revisions == {TURBO: SHA, "other/model": "v1.0"}
    assert Settings(_env_file=None, **settings.to_env()).model_revisions == settings.model_revisions  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [f"{TURBO}", f"={SHA}", f"{TURBO}=", f"{TURBO} {SHA}"])
def test_an_entry_that_is_not_id_equals_revision_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="MODEL_REVISIONS"):
        make(model_revisions=value)


def test_every_pinned_model_must_be_allowed() -> None:
    with pytest.raises(ValidationError, match=r"not in ALLOWED_MODELS: \['other/model'\]"):
        make(model_revisions=f"other/model={SHA}")
    assert make(model_revisions=f"{TURBO}={SHA}").model_revisions == {TURBO: SHA}  # the default


def test_only_hub_models_are_pinned(tmp_path: Path) -> None:
    folder = str(tmp_path)
    settings = make(
        allowed_models=["tiny-sdxl", folder],
        model_revisions=f"{TURBO}={SHA},tiny-sdxl=x,{folder}=y",
    )
    assert settings.pinned_revisions() == {TURBO: SHA}
    assert settings.engine_config().model_revisions == {TURBO: SHA}


def job(revision: str | None = None) -> GenerationJob:
    return GenerationJob(
        "req-1", "a red fox", "blurry", "standard", TURBO, 512, 512, 1, 0.0, (7, 8),
        model_revision=revision,
    )  # fmt: skip


def test_the_digests_of_unpinned_jobs_are_unchanged() -> None:
    """Computed before MODEL_REVISIONS existed: stored images keep vouching for themselves."""
    assert request_digest(job()) == (
        "acc623d256c214ddf7dde1d2c7d3fd0c09d5c134f6b4390b41edbcf2b203e17b"
    )
    assert image_metadata(job(), 1)["params-sha256"] == (
        "e01a589731e40961f3e916003e967371bb10a5f84afe2fe6c8e7bf71035f4e82"
    )
    assert "model_revision" not in image_parameters(job(), 0)


def test_the_revision_is_part_of_the_parameters_and_their_digests() -> None:
    pinned, other = job(SHA), job("v2")
    assert image_parameters(pinned, 0)["model_revision"] == SHA
    digests = {request_digest(j) for j in (job(), pinned, other)}
    assert len(digests) == 3
    image_digests = {image_metadata(j, 0)["params-sha256"] for j in (job(), pinned, other)}
    assert len(image_digests) == 3
    assert pinned.batch_key == job().batch_key  # one revision per model on a worker


def test_planning_fills_the_revision_of_the_requested_model() -> None:
    limits = RequestLimits(allowed_models=(TURBO, "tiny-sdxl"), default_model=TURBO)

    def planned(body: str) -> GenerationJob:
        outcome = parse_request(body.encode(), limits)
        assert isinstance(outcome, Accepted)
        return plan_job(outcome.request, "n", {TURBO: SHA})

    assert planned('{"request_id": "a", "prompt": "cat"}').model_revision == SHA
    tiny = '{"request_id": "b", "prompt": "cat", "params": {"model": "tiny-sdxl"}}'
    assert planned(tiny).model_revision is None
    outcome = parse_request(b'{"request_id": "c", "prompt": "cat"}', limits)
    assert isinstance(outcome, Accepted) and plan_job(outcome.request, "n").model_revision is None


async def test_the_worker_stores_images_of_a_pinned_model_with_its_revision(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="consumer.requests")
    h = Harness(tmp_path, FakeEngine(), model_revisions=f"fake={SHA}")
    h.broker.append(TOPIC, 0, event("pinned"))
    async with running(h):
        await h.wait(lambda: "pinned" in h.results(), "the result")
    (result,) = h.results()["pinned"]
    assert result.status == "completed"
    key = result.images[0].key
    data = h.store.get(key)
    assert data is not None and read_image_parameters(data)["model_revision"] == SHA
    outcome = parse_request(event("pinned"), h.settings.request_limits())
    assert isinstance(outcome, Accepted)
    planned = plan_job(outcome.request, h.settings.default_negative_prompt)
    metadata = h.store.head(key) or {}
    assert metadata["request-sha256"] == request_digest(
        dataclasses.replace(planned, model_revision=SHA)
    )
    assert metadata["request-sha256"] != request_digest(planned)
    (line,) = [r for r in caplog.records if r.getMessage() == "request finished"]
    assert line.model_revision == SHA  # type: ignore[attr-defined]


async def test_models_route_shows_each_models_revision() -> None:
    settings = make(
        default_model=TURBO, allowed_models=["tiny-sdxl"], model_revisions=f"{TURBO}={SHA}"
    )

    class Idle:
        engine = FakeEngine()

    app = build_app(SidecarConfig.from_settings(settings), Idle())  # type: ignore[arg-type]
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    try:
        body = await (await client.get("/v1/models")).json()
    finally:
        await client.close()
    assert {d["id"]: d["revision"] for d in body["details"]} == {TURBO: SHA, "tiny-sdxl": None}
