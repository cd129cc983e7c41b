"""Contract 1.2's worker parts without a model: reading and sizing init images, the batch
processor's refusals and regrouping, the digests (new parameters only when present), and the
LoRA adapter bookkeeping on a stand-in pipeline."""

from __future__ import annotations

import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from consumer.generation.engine import GenerationJob, JobOutput
from consumer.generation.engine.config import LoraSource
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.engine.loras import LoraAdapters
from consumer.generation.engine.protocol import EngineError
from consumer.generation.inputs import InputRefused, decode_input, output_side, sized_job
from consumer.generation.processing import BatchProcessor
from consumer.output.images import image_parameters, request_digest
from schemas import ErrorCode, Status
from storage import LocalImageStore


def encoded(size: tuple[int, int], kind: str = "PNG", colour: int = 80) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (colour, 20, 20)).save(buffer, kind)
    return buffer.getvalue()


def job(request_id: str = "r", **changes: Any) -> GenerationJob:
    base = GenerationJob(request_id, "p", "n", "standard", "m", 64, 64, 2, 0.0, (1,))
    return replace(base, **changes)


def i2i(request_id: str = "r", key: str = "inputs/a.png", **changes: Any) -> GenerationJob:
    fields: dict[str, Any] = {"strength": 0.5, "width": 0, "height": 0, **changes}
    return job(request_id, init_image=key, **fields)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (None, ErrorCode.INIT_IMAGE_NOT_FOUND),
        (b"x" * 101, ErrorCode.INIT_IMAGE_TOO_LARGE),
        (b"GIF89a....", ErrorCode.INIT_IMAGE_UNSUPPORTED_FORMAT),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, ErrorCode.INIT_IMAGE_UNDECODABLE),
    ],
)
def test_each_unusable_input_has_its_code(data: bytes | None, code: ErrorCode) -> None:
    with pytest.raises(InputRefused) as caught:
        decode_input(data, 100)
    assert caught.value.code is code


def test_an_image_over_2048_pixels_a_side_is_too_large() -> None:
    with pytest.raises(InputRefused) as caught:
        decode_input(encoded((2056, 8)), 10**6)
    assert caught.value.code is ErrorCode.INIT_IMAGE_TOO_LARGE


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP"])
def test_the_three_formats_decode_with_their_digest(kind: str) -> None:
    data = encoded((40, 24), kind)
    image = decode_input(data, 10**6)
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    assert image.pixels.size == (40, 24) and image.pixels.mode == "RGB"


def test_the_output_takes_the_input_size_rounded_or_the_requested_one() -> None:
    assert output_side(0, 100, 64, 2048) == 96
    assert output_side(0, 30, 64, 2048) == 64
    assert output_side(0, 2047, 64, 1024) == 1024
    assert output_side(128, 100, 64, 2048) == 128
    image = decode_input(encoded((100, 70)), 10**6)
    sized = sized_job(i2i(requested_size=(0, 128)), image, 64, 2048)
    assert (sized.width, sized.height) == (96, 128)
    assert sized.input_pixels is not None and sized.input_pixels.size == (96, 128)
    assert sized.input_sha256 == image.sha256 and not sized.input_pending


def test_digests_gain_the_new_parameters_only_when_used() -> None:
    plain = job()
    assert not {"init_image", "strength", "loras", "init_image_sha256"} & set(
        image_parameters(plain, 0)
    )
    read = replace(i2i(), width=64, height=64, input_sha256="ab" * 32)
    assert image_parameters(read, 0)["init_image_sha256"] == "ab" * 32
    # The request digest is known before the input is read, and stays the same after.
    assert request_digest(read) == request_digest(i2i())
    assert request_digest(i2i()) != request_digest(i2i(strength=0.75))
    assert request_digest(i2i()) != request_digest(i2i(key="inputs/b.png"))
    with_lora = job(loras=(("style", 1.0),))
    assert request_digest(with_lora) != request_digest(plain)
    assert request_digest(with_lora) != request_digest(job(loras=(("style", 0.5),)))
    assert image_parameters(with_lora, 0)["loras"] == [["style", 1.0]]


async def test_a_batch_reads_each_input_once_answers_refusals_and_runs_the_rest(
    tmp_path: Path,
) -> None:
    store = LocalImageStore(tmp_path)
    store.put("inputs/a.png", encoded((64, 64)))
    store.put("inputs/big.png", encoded((128, 64)))
    store.put("inputs/bad.png", b"not an image")
    reads: list[str] = []
    original = store.get_prefix

    def counted(key: str, limit: int) -> bytes | None:
        reads.append(key)
        return original(key, limit)

    store.get_prefix = counted  # type: ignore[method-assign]
    engine = FakeEngine()
    jobs = [
        i2i("a1", seeds=(1,)),
        i2i("a2", seeds=(2,)),
        i2i("big", key="inputs/big.png"),
        i2i("bad", key="inputs/bad.png"),
        i2i("gone", key="inputs/gone.png"),
        i2i("stronger", strength=1.0),
    ]
    with ThreadPoolExecutor(1) as engine_thread, ThreadPoolExecutor(2) as io:
        processor = BatchProcessor(
            engine,
            store,
            key_prefix="images",
            timeout_seconds=10,
            engine_thread=engine_thread,
            io_threads=io,
        )
        outcomes = await processor.generate(jobs)
    assert sorted(reads) == ["inputs/a.png", "inputs/bad.png", "inputs/big.png", "inputs/gone.png"]
    by_id = {(o.job.request_id if isinstance(o, JobOutput) else o.request_id): o for o in outcomes}
    assert [k for k in by_id] == [j.request_id for j in jobs]  # in the jobs' order
    bad, gone = by_id["bad"], by_id["gone"]
    assert not isinstance(bad, JobOutput) and bad.status == Status.REJECTED
    assert bad.error is not None and bad.error.code == "init_image_unsupported_format"
    assert not isinstance(gone, JobOutput) and gone.error is not None
    assert gone.error.code == "init_image_not_found"
    big = by_id["big"]
    assert isinstance(big, JobOutput) and big.images[0].size == (128, 64)
    # One call per batch key: a1 and a2 together, big (another size), stronger (another strength)
    assert engine.batches == [["a1", "a2"], ["big"], ["stronger"]]
    a1, a2 = by_id["a1"], by_id["a2"]
    assert isinstance(a1, JobOutput) and isinstance(a2, JobOutput)
    assert a1.images[0].tobytes() != a2.images[0].tobytes()


class StandInPipeline:
    """What LoraAdapters calls on a diffusers pipeline, recorded."""

    def __init__(self, failing: set[str] | None = None) -> None:
        self.failing = failing or set()
        self.calls: list[tuple[Any, ...]] = []

    def load_lora_weights(self, where: str, adapter_name: str, **options: Any) -> None:
        self.calls.append(("load", adapter_name, options.get("use_safetensors")))
        if adapter_name in self.failing:
            raise OSError(f"no weights at {where}")

    def delete_adapters(self, names: list[str]) -> None:
        self.calls.append(("delete", *names))

    def set_adapters(self, names: list[str], adapter_weights: list[float]) -> None:
        self.calls.append(("set", tuple(names), tuple(adapter_weights)))

    def enable_lora(self) -> None:
        self.calls.append(("enable",))

    def disable_lora(self) -> None:
        self.calls.append(("disable",))


def adapters(tmp_path: Path, now: list[float], capacity: int = 2) -> LoraAdapters:
    sources = {name: LoraSource(str(tmp_path / name)) for name in ("a", "b", "c", "bad")}
    return LoraAdapters(
        sources, tmp_path, capacity=capacity, retry_seconds=60, clock=lambda: now[0]
    )


def test_adapters_load_lazily_once_and_are_set_per_call(tmp_path: Path) -> None:
    loras, pipe = adapters(tmp_path, [0.0]), StandInPipeline()
    loras.apply(pipe, "m", ())  # nothing loaded: nothing to turn off
    assert pipe.calls == []
    loras.apply(pipe, "m", (("a", 1.0),))
    loras.apply(pipe, "m", (("a", 0.5), ("b", -1.0)))
    loras.apply(pipe, "m", ())
    assert pipe.calls == [
        ("load", "a", True),
        ("enable",),
        ("set", ("a",), (1.0,)),
        ("load", "b", True),
        ("enable",),
        ("set", ("a", "b"), (0.5, -1.0)),
        ("disable",),
    ]
    assert loras.loads == ["a", "b"]


def test_the_least_recently_used_adapter_not_needed_goes_first(tmp_path: Path) -> None:
    loras, pipe = adapters(tmp_path, [0.0], capacity=2), StandInPipeline()
    loras.apply(pipe, "m", (("a", 1.0),))
    loras.apply(pipe, "m", (("b", 1.0),))
    loras.apply(pipe, "m", (("a", 1.0),))  # a used last: b is the older one
    loras.apply(pipe, "m", (("c", 1.0),))
    assert ("delete", "b") in pipe.calls and ("delete", "a") not in pipe.calls
    assert loras.loaded(pipe) == ["a", "c"]


def test_a_failed_adapter_is_remembered_for_a_while(tmp_path: Path) -> None:
    now = [0.0]
    loras, pipe = adapters(tmp_path, now), StandInPipeline(failing={"bad"})
    for _ in range(2):
        with pytest.raises(EngineError) as caught:
            loras.apply(pipe, "m", (("bad", 1.0),))
        assert caught.value.code is ErrorCode.LORA_UNAVAILABLE
    assert loras.loads == ["bad"]  # the second request failed at once
    now[0] = 61.0
    with pytest.raises(EngineError):
        loras.apply(pipe, "m", (("bad", 1.0),))
    assert loras.loads == ["bad", "bad"]
    assert ("delete", "bad") in pipe.calls  # no half-loaded adapter left


def test_the_fake_engine_refuses_unavailable_adapters() -> None:
    engine = FakeEngine(unavailable_loras={"bad"})
    with pytest.raises(EngineError) as caught:
        engine.generate([job(loras=(("bad", 1.0),))], 10)
    assert caught.value.code is ErrorCode.LORA_UNAVAILABLE
    (plain,) = engine.generate([job()], 10)
    (styled,) = engine.generate([job(loras=(("ok", 1.0),))], 10)
    assert plain.images[0].tobytes() != styled.images[0].tobytes()


async def test_v1_models_lists_the_allowed_adapters_without_their_sources(tmp_path: Path) -> None:
    from consumer.settings import Settings
    from tests.unit.test_sidecar_models import get

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path,
        default_model="tiny-sdxl",
        allowed_loras="tiny-lora,style=/srv/loras/style,org/adapter",
        lora_revisions="org/adapter=abc123",
    )
    models = await get(settings, FakeEngine(), "/v1/models")
    assert models["loras"] == [
        {"name": "tiny-lora", "revision": None},
        {"name": "style", "revision": None},
        {"name": "org/adapter", "revision": "abc123"},
    ]
    assert models["max_loras_per_request"] == 2 and models["input_prefix"] == "inputs/"
    assert "/srv/loras" not in str(models)


def test_the_simulated_engine_draws_other_images_for_inputs_and_adapters() -> None:
    from consumer.generation.engine.config import EngineConfig
    from consumer.generation.engine.simulated import SimulatedEngine

    engine = SimulatedEngine(
        EngineConfig(models_dir=Path("m"), simulated_step_ms=0, simulated_load_ms=0)
    )
    steps: list[tuple[int, int]] = []
    plain = engine.generate([job(steps=4)], 0)[0].images[0]
    image = decode_input(encoded((64, 64)), 10**6)
    read = sized_job(i2i(steps=4), image, 64, 2048)
    drawn = engine.generate([read], 0, on_step=lambda done, total: steps.append((done, total)))
    styled = engine.generate([job(steps=4, loras=(("a", 1.0),))], 0)[0].images[0]
    assert steps == [(1, 2), (2, 2)]  # 4 steps x strength 0.5
    assert len({plain.tobytes(), drawn[0].images[0].tobytes(), styled.tobytes()}) == 3
