"""Output formats (contract 1.1): PNG, JPEG and WebP with the parameters embedded, their keys,
content types and sizes, and redelivery reuse that follows the format."""

from __future__ import annotations

import dataclasses
import io
import json
import typing
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from consumer.generation.engine import GenerationJob, JobOutput
from consumer.output.images import (
    PARAMS_DIGEST_METADATA,
    encode_output,
    image_key_for,
    image_parameters,
    store_output,
    stored_result,
)
from schemas.params import OutputFormat
from storage import (
    ImageFormat,
    LocalImageStore,
    content_type,
    encode_image,
    encode_png,
    extension,
    format_of,
    image_key,
    parameters_digest,
    read_image_parameters,
    read_png_parameters,
)
from storage.images import PROMPTS_OMITTED_KEY

PARAMS = {"prompt": "corgi astronaut ✨", "seed": 123, "steps": 1, "cfg": 0.0}
PREFIX = "images"


def photo(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Gradients plus a disc: enough structure for lossy encoders to differ by quality."""
    image = Image.linear_gradient("L").resize(size).convert("RGB")
    image.paste((200, 40, 90), (10, 10, 50, 50))
    image.putpixel((3, 4), (255, 0, 0))
    return image


# --- encoding ----------------------------------------------------------------------------------


def test_the_format_literals_of_the_contract_and_the_store_agree() -> None:
    from schemas.params import DEFAULT_QUALITY as CONTRACT_DEFAULT
    from storage.images import DEFAULT_QUALITY as STORE_DEFAULT

    assert typing.get_args(OutputFormat) == typing.get_args(ImageFormat) == ("png", "jpeg", "webp")
    assert CONTRACT_DEFAULT == STORE_DEFAULT == 90


@pytest.mark.parametrize(
    ("image_format", "ext", "media_type", "pil_format"),
    [
        ("png", "png", "image/png", "PNG"),
        ("jpeg", "jpg", "image/jpeg", "JPEG"),
        ("webp", "webp", "image/webp", "WEBP"),
    ],
)
def test_each_format_decodes_and_carries_its_parameters(
    image_format: str, ext: str, media_type: str, pil_format: str
) -> None:
    data = encode_image(photo(), PARAMS, image_format, 90 if image_format != "png" else None)
    assert (extension(image_format), content_type(image_format)) == (ext, media_type)
    assert format_of(data) == image_format
    assert read_image_parameters(data) == PARAMS
    with Image.open(io.BytesIO(data)) as decoded:
        assert (decoded.format, decoded.size, decoded.mode) == (pil_format, (96, 64), "RGB")


def test_png_is_what_contract_1_wrote() -> None:
    assert encode_image(photo(), PARAMS) == encode_png(photo(), PARAMS)
    assert read_image_parameters(encode_png(photo(), PARAMS)) == read_png_parameters(
        encode_png(photo(), PARAMS)
    )


@pytest.mark.parametrize("image_format", ["jpeg", "webp"])
def test_lossy_bytes_are_deterministic_and_follow_the_quality(image_format: str) -> None:
    first = encode_image(photo(), {"b": 1, "a": 2}, image_format, 90)
    assert encode_image(photo(), {"a": 2, "b": 1}, image_format, 90) == first
    assert encode_image(photo(), {"a": 2, "b": 1}, image_format) == first  # 90 is the default
    low = encode_image(photo((256, 256)), PARAMS, image_format, 20)
    high = encode_image(photo((256, 256)), PARAMS, image_format, 95)
    assert len(low) < len(high)


@pytest.mark.parametrize("image_format", ["jpeg", "webp"])
def test_source_metadata_does_not_leak_into_lossy_files(image_format: str) -> None:
    image = photo()
    image.info.update(dpi=(300, 300), comment="elsewhere", exif=b"Exif\x00\x00junk", xmp=b"<x/>")
    assert encode_image(image, PARAMS, image_format, 80) == encode_image(
        photo(), PARAMS, image_format, 80
    )


def test_jpeg_without_alpha_takes_rgba_input() -> None:
    data = encode_image(photo().convert("RGBA"), PARAMS, "jpeg", 80)
    assert format_of(data) == "jpeg" and read_image_parameters(data) == PARAMS


def test_jpeg_keeps_the_other_parameters_when_prompts_overflow_its_exif_segment() -> None:
    huge = {**PARAMS, "prompt": "\U0001f600" * 6000}  # 12 escaped bytes each: 72 KB
    data = encode_image(photo(), huge, "jpeg", 80)
    read = read_image_parameters(data)
    assert "prompt" not in read and read[PROMPTS_OMITTED_KEY] and read["seed"] == 123
    assert read_image_parameters(encode_image(photo(), huge, "webp", 80)) == huge  # no limit there


def test_reading_images_without_parameters_or_not_images() -> None:
    for pil_format in ("PNG", "JPEG", "WEBP", "GIF"):
        buffer = io.BytesIO()
        photo().save(buffer, format=pil_format)
        assert read_image_parameters(buffer.getvalue()) == {}
    with pytest.raises(ValueError):
        read_image_parameters(b"not an image")
    assert format_of(b"GIF89a") is None


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_image(photo(), PARAMS, "gif")


def test_image_key_extensions() -> None:
    assert image_key("images", "req-1", 0) == "images/req-1/0.png"
    assert image_key("images", "req-1", 1, "jpg") == "images/req-1/1.jpg"
    assert image_key("", "req-1", 2, "webp") == "req-1/2.webp"
    with pytest.raises(ValueError):
        image_key("images", "req-1", 0, "exe")


# --- results -----------------------------------------------------------------------------------


def job(image_format: OutputFormat = "png", quality: int | None = None) -> GenerationJob:
    base = GenerationJob("req-1", "a red fox", "blurry", "standard", "m", 64, 64, 1, 0.0, (7, 8))
    return dataclasses.replace(base, format=image_format, quality=quality)


class RecordingStore(LocalImageStore):
    """A local store that remembers the content type of each put (the local backend drops it)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, base_url="https://cdn.example.com/img")
        self.content_types: dict[str, str] = {}

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        self.content_types[key] = content_type
        return super().put(key, data, content_type, metadata)


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path)


def store_job(store: RecordingStore, planned: GenerationJob) -> list[bytes]:
    output = JobOutput(planned, [photo((64, 64)) for _ in planned.seeds], 0.5)
    encoded = encode_output(output)
    result = store_output(output, encoded, store, PREFIX)
    assert [image.bytes for image in result.images] == [len(data) for data in encoded]
    return encoded


@pytest.mark.parametrize(
    ("image_format", "quality", "ext"),
    [("png", None, "png"), ("jpeg", 85, "jpg"), ("webp", 90, "webp")],
)
def test_store_output_follows_the_job_format(
    store: RecordingStore, image_format: OutputFormat, quality: int | None, ext: str
) -> None:
    planned = job(image_format, quality)
    encoded = store_job(store, planned)
    keys = [f"{PREFIX}/req-1/{i}.{ext}" for i in range(2)]
    assert [image_key_for(planned, PREFIX, i) for i in range(2)] == keys
    assert store.content_types == dict.fromkeys(keys, content_type(image_format))
    for index, key in enumerate(keys):
        data = store.get(key)
        assert data == encoded[index] and format_of(data) == image_format
        assert read_image_parameters(data) == image_parameters(planned, index)
    served = stored_result(planned, store, PREFIX)
    assert served is not None
    assert [(i.key, i.content_type, i.bytes) for i in served.images] == [
        (key, content_type(image_format), len(data))
        for key, data in zip(keys, encoded, strict=True)
    ]


def test_png_parameters_are_unchanged_from_contract_1() -> None:
    """No format or quality in a PNG: its bytes and digest stay what version 1 stored, so
    images stored before the upgrade are still served to redeliveries."""
    assert "format" not in image_parameters(job(), 0)
    lossy = image_parameters(job("webp", 90), 0)
    assert (lossy["format"], lossy["quality"]) == ("webp", 90)


def test_a_redelivery_asking_for_another_format_or_quality_is_not_served_a_stale_one(
    store: RecordingStore,
) -> None:
    store_job(store, job("jpeg", 90))
    assert stored_result(job("jpeg", 90), store, PREFIX) is not None
    assert stored_result(job("jpeg", 80), store, PREFIX) is None  # same keys, other digest
    assert stored_result(job("png"), store, PREFIX) is None
    assert stored_result(job("webp", 90), store, PREFIX) is None


def test_the_digest_covers_format_and_quality() -> None:
    digests = {
        parameters_digest(image_parameters(job(f, q), 0))
        for f, q in (("png", None), ("jpeg", 90), ("jpeg", 80), ("webp", 90))
    }
    assert len(digests) == 4


def test_an_image_stored_before_sizes_were_recorded_is_served_without_one(
    store: RecordingStore,
) -> None:
    planned = job()
    for index, data in enumerate(store_job(store, planned)):
        key = image_key_for(planned, PREFIX, index)
        digest = parameters_digest(image_parameters(planned, index))
        store.put(key, data, metadata={PARAMS_DIGEST_METADATA: digest})  # as contract 1 did
    served = stored_result(planned, store, PREFIX)
    assert served is not None and [i.bytes for i in served.images] == [None, None]
    assert json.loads(served.model_dump_json())["images"][0]["content_type"] == "image/png"


# --- `generate --out` --------------------------------------------------------------------------


def test_generate_out_suffix_implies_the_format() -> None:
    from consumer.client.oneshot import InvalidRequestError, format_for_out

    assert format_for_out(Path("x.webp"), None) == "webp"
    assert format_for_out(Path("x.JPG"), None) == format_for_out(Path("x.jpeg"), None) == "jpeg"
    assert format_for_out(Path("x.png"), None) is None  # the default: the v1 request, unchanged
    assert format_for_out(Path("x.png"), "png") == "png"
    assert format_for_out(Path("x.bin"), None) is None and format_for_out(None, None) is None
    assert format_for_out(Path("x.bin"), "webp") == "webp"
    assert format_for_out(None, "jpeg") == "jpeg"
    with pytest.raises(InvalidRequestError):
        format_for_out(Path("x.png"), "webp")


def test_request_from_args_adds_format_only_when_asked() -> None:
    from consumer.client.oneshot import request_from_args

    def make(**extra: Any) -> dict[str, Any]:
        return request_from_args(
            "a fox", seed=1, width=64, height=64, steps=1, cfg=0.0, num_images=1, model=None,
            negative_prompt=None, **extra,
        )  # fmt: skip

    plain, lossy = make(), make(image_format="jpeg", quality=70)
    assert "format" not in plain["params"]  # a version-1 command line: the same request
    assert lossy["params"] == {**plain["params"], "format": "jpeg", "quality": 70}
    assert lossy["request_id"] != plain["request_id"]  # other bytes, other id


def test_file_store_maps_lossy_image_keys_to_the_out_names(tmp_path: Path) -> None:
    from consumer.client.oneshot import _FileStore

    files = _FileStore(tmp_path / "fox.webp")
    files.put("r/0.webp", b"zero", "image/webp")
    files.put("r/1.webp", b"one", "image/webp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox-1.webp", "fox.webp"]
