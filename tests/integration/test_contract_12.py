"""Contract 1.2 end to end on a real worker, broker (Tansu), store (SeaweedFS) and the tiny
diffusers model with the tiny LoRA adapter: image-to-image and LoRA adapters per request."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from consumer.client import GenerationClient
from consumer.devtools.services import create_topics
from consumer.generation.engine import GenerationJob, JobOutput
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.settings import Settings
from schemas import GenerationResult
from storage import ImageStore, build_store, read_image_parameters
from tests.integration.kafka_tools import running_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

WAIT = 120  # seconds for any one result


class RecordingEngine(DiffusersEngine):
    """The real engine, noting the request ids of each call."""

    calls: list[list[str]]

    def generate(self, jobs: Sequence[GenerationJob], *args: Any, **kwargs: Any) -> list[JobOutput]:
        self.calls.append([job.request_id for job in jobs])
        return super().generate(jobs, *args, **kwargs)


def recording_engine(settings: Settings) -> RecordingEngine:
    engine = RecordingEngine(settings.engine_config())
    engine.calls = []
    return engine


@pytest.fixture
async def settings(make_settings: Callable[..., Settings]) -> Settings:
    suffix = make_settings().group_id
    built = make_settings(
        control_topic=f"control-{suffix}",
        progress_topic="",
        allowed_loras="tiny-lora,broken=/nonexistent/lora-folder",
        max_input_image_bytes=60_000,
        input_prefix=f"inputs/{suffix}/",
    )
    # One partition: requests sent before the worker starts all come in its first poll.
    await create_topics(built.kafka_bootstrap_servers, [built.request_topic, built.result_topic], 1)
    return built


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def picture(width: int = 96, height: int = 64) -> bytes:
    """A smooth picture (not noise): what image-to-image starts from."""
    x = np.linspace(0, 255, width, dtype=np.uint8)[np.newaxis, :, np.newaxis]
    y = np.linspace(0, 255, height, dtype=np.uint8)[:, np.newaxis, np.newaxis]
    pixels = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 90, np.uint8),
        ],
        axis=2,
    )
    return png(Image.fromarray(np.ascontiguousarray(pixels)))


def body(request_id: str, **params: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "schema_version": "1.2",
        "prompt": "a lighthouse",
        "params": {"steps": 2, **params},
    }


async def results(client: GenerationClient, ids: Sequence[str]) -> dict[str, GenerationResult]:
    found = {}
    for request_id in ids:
        result = await client.wait(request_id, timeout=WAIT)
        assert result is not None, f"no result for {request_id}"
        found[request_id] = result
    return found


def image_bytes(store: ImageStore, result: GenerationResult) -> bytes:
    assert result.status == "completed", result
    data = store.get(result.images[0].key)
    assert data is not None
    return data


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


async def test_image_to_image_differs_from_text_to_image_and_reproduces_byte_for_byte(
    settings: Settings,
) -> None:
    store = build_store(settings)
    source = picture()
    async with GenerationClient(settings) as client, running_worker(settings):
        init = await client.upload_init_image(source)
        assert init["key"].startswith(settings.input_prefix)
        ids = [await client.submit(body("t2i", seed=7, width=96, height=64))]
        ids.append(await client.submit(body("i2i", seed=7, init_image=init, strength=0.5)))
        ids.append(await client.submit(body("i2i-big", seed=7, init_image=init, width=128)))
        first = await results(client, ids)
    text, image, resized = (image_bytes(store, first[i]) for i in ids)
    assert not np.array_equal(pixels(text), pixels(image))
    ref = first["i2i"].images[0]
    assert (ref.width, ref.height) == (96, 64)  # the input's size
    assert (first["i2i-big"].images[0].width, first["i2i-big"].images[0].height) == (128, 64)
    assert Image.open(io.BytesIO(resized)).size == (128, 64)
    digest = hashlib.sha256(source).hexdigest()
    audit = first["i2i"].audit
    assert audit is not None and audit.init_image_sha256 == digest
    embedded = read_image_parameters(image)
    assert embedded["init_image_sha256"] == digest and embedded["strength"] == 0.5
    assert first["t2i"].audit is not None and first["t2i"].audit.init_image_sha256 is None
    # Delivered again with reuse off: generated again, the very same bytes under the same key.
    again = settings.model_copy(update={"reuse_stored_images": False})
    async with GenerationClient(again) as client, running_worker(again):
        await client.submit(body("i2i", seed=7, init_image=init, strength=0.5))
        (second,) = (await results(client, ["i2i"])).values()
    assert second.audit is not None and second.audit.duration_sec != "0.000"  # not from store
    assert image_bytes(store, second) == image
    # With reuse on (the default), a redelivery is answered from the store: its request digest,
    # known before the input is read, matches what the first delivery stored.
    async with GenerationClient(settings) as client, running_worker(settings):
        await client.submit(body("i2i", seed=7, init_image=init, strength=0.5))
        (third,) = (await results(client, ["i2i"])).values()
    assert third.status == "completed" and third.audit is not None
    assert third.audit.duration_sec == "0.000" and third.images[0].key == ref.key


async def test_each_refusal_gets_its_code(settings: Settings) -> None:
    store = build_store(settings)
    prefix = settings.input_prefix
    noisy = png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), np.uint8)))
    assert len(noisy) > settings.max_input_image_bytes
    inputs = {
        f"{prefix}text.png": b"not an image at all",
        f"{prefix}large.png": noisy,
        f"{prefix}wide.png": png(Image.new("RGB", (2056, 8))),
        f"{prefix}broken.png": picture()[:60],
        f"{prefix}good.png": picture(),
    }
    for key, data in inputs.items():
        store.put(key, data)
    cases = {
        "outside": ({"key": "elsewhere/good.png"}, "rejected", "init_image_not_allowed"),
        "missing": ({"key": f"{prefix}nothing.png"}, "rejected", "init_image_not_found"),
        "text": ({"key": f"{prefix}text.png"}, "rejected", "init_image_unsupported_format"),
        "large": ({"key": f"{prefix}large.png"}, "rejected", "init_image_too_large"),
        "wide": ({"key": f"{prefix}wide.png"}, "rejected", "init_image_too_large"),
        "broken": ({"key": f"{prefix}broken.png"}, "rejected", "init_image_undecodable"),
        "good": ({"key": f"{prefix}good.png"}, "completed", None),
    }
    async with GenerationClient(settings) as client:
        for request_id, (init, _, _) in cases.items():  # all before the worker: one poll
            await client.submit(body(request_id, seed=1, init_image=init))
        await client.submit(body("not-allowed", seed=1, loras=[{"name": "nope", "scale": 1.0}]))
        await client.submit(body("broken-lora", seed=1, loras=[{"name": "broken", "scale": 1.0}]))
        await client.submit(body("broken-again", seed=2, loras=[{"name": "broken", "scale": 1.0}]))
        async with running_worker(settings):
            answers = await results(client, [*cases, "not-allowed", "broken-lora", "broken-again"])
    for request_id, (_, status, code) in cases.items():
        result = answers[request_id]
        assert result.status == status, (request_id, result)
        assert (result.error.code if result.error else None) == code, (request_id, result)
    assert answers["not-allowed"].status == "rejected"
    assert answers["not-allowed"].error is not None
    assert answers["not-allowed"].error.code == "lora_not_allowed"
    for request_id in ("broken-lora", "broken-again"):
        assert answers[request_id].status == "failed"
        assert answers[request_id].error is not None
        assert answers[request_id].error.code == "lora_unavailable"


async def test_a_lora_changes_the_image_and_a_mixed_batch_gives_each_what_it_gives_alone(
    settings: Settings,
) -> None:
    store = build_store(settings)
    size = {"seed": 5, "width": 96, "height": 64}
    variants: dict[str, dict[str, Any]] = {
        "plain": {},
        "lora": {"loras": [{"name": "tiny-lora", "scale": 1.0}]},
        "lora-neg": {"loras": [{"name": "tiny-lora", "scale": -1.5}]},
        "lora-i2i": {"loras": [{"name": "tiny-lora", "scale": 1.0}]},  # with an init image below
    }
    engine = recording_engine(settings)
    async with GenerationClient(settings) as client:
        init = await client.upload_init_image(picture())
        variants["lora-i2i"].update(init_image=init, strength=1.0)
        for name, extra in variants.items():  # all before the worker: one poll
            await client.submit(body(f"mixed-{name}", **size, **extra))
        async with running_worker(settings, engine):
            mixed = await results(client, [f"mixed-{name}" for name in variants])
            alone = {}
            for name, extra in variants.items():  # one at a time: each its own engine call
                await client.submit(body(f"alone-{name}", **size, **extra))
                alone.update(await results(client, [f"alone-{name}"]))
    got = {name: pixels(image_bytes(store, mixed[f"mixed-{name}"])) for name in variants}
    ref = {name: pixels(image_bytes(store, alone[f"alone-{name}"])) for name in variants}
    for name in variants:
        assert np.array_equal(got[name], ref[name]), name  # the same pixels, byte for byte
    assert not np.array_equal(got["plain"], got["lora"])
    assert not np.array_equal(got["lora"], got["lora-neg"])
    audit = mixed["mixed-lora"].audit
    assert audit is not None and audit.loras is not None
    assert [(lora.name, lora.scale) for lora in audit.loras] == [("tiny-lora", 1.0)]
    first_calls = engine.calls[: len(variants)]
    assert all(len(call) == 1 for call in first_calls), first_calls  # one call per adapter set


async def test_image_to_image_batches_and_each_image_matches_its_seed_alone(
    settings: Settings,
) -> None:
    """Two image-to-image requests with one strength share an engine call; each image is what
    its seed gives alone, within 1/255 on a few values (a batched CPU call is not bitwise the
    single one, as for text-to-image: docs/contract.md)."""
    store = build_store(settings)
    engine = recording_engine(settings)
    async with GenerationClient(settings) as client:
        init = await client.upload_init_image(picture())
        for seed in (11, 12):
            await client.submit(body(f"batched-{seed}", seed=seed, init_image=init))
        async with running_worker(settings, engine):
            batched = await results(client, ["batched-11", "batched-12"])
            alone = {}
            for seed in (11, 12):
                await client.submit(body(f"alone-{seed}", seed=seed, init_image=init))
                alone.update(await results(client, [f"alone-{seed}"]))
    assert ["batched-11", "batched-12"] in engine.calls
    for seed in (11, 12):
        together = pixels(image_bytes(store, batched[f"batched-{seed}"]))
        single = pixels(image_bytes(store, alone[f"alone-{seed}"]))
        assert np.abs(together - single).max() <= 1
    assert not np.array_equal(
        pixels(image_bytes(store, alone["alone-11"])), pixels(image_bytes(store, alone["alone-12"]))
    )


def test_tiny_lora_builds_byte_identical(tmp_path_factory: pytest.TempPathFactory) -> None:
    from consumer.generation.engine.tiny_lora import LORA_WEIGHTS_FILENAME, ensure_tiny_lora

    first = ensure_tiny_lora(tmp_path_factory.mktemp("first"))
    second = ensure_tiny_lora(tmp_path_factory.mktemp("second"))
    data = (first / LORA_WEIGHTS_FILENAME).read_bytes()
    assert data == (second / LORA_WEIGHTS_FILENAME).read_bytes()
    assert len(data) < 200_000  # tiny, as the model
    assert ensure_tiny_lora(first.parent) == first  # built once
