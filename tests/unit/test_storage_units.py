"""Storage pieces that need no server: keys, PNG encoding, the local store, S3 URL forms."""

from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, urlparse

import pytest
from botocore.stub import Stubber
from PIL import Image
from pydantic import SecretStr

from storage import (
    LocalImageStore,
    S3ImageStore,
    StorageError,
    build_store,
    encode_png,
    image_id,
    image_key,
    read_png_parameters,
)

ACCESS_KEY = "AKIAUNITTESTKEY0001"
SECRET_KEY = "unit-test-secret-do-not-print-0123456789"


# --- keys --------------------------------------------------------------------------------------


def test_image_key_layout() -> None:
    assert image_key("images", "req-1", 0) == "images/req-1/0.png"
    assert image_key("", "req-1", 3) == "req-1/3.png"
    assert image_key("/a/b/", "r", 1) == "a/b/r/1.png"


@pytest.mark.parametrize(("request_id", "index"), [("..", 0), (".", 0), ("a/b", 0), ("r", -1)])
def test_image_key_refuses_unsafe_parts(request_id: str, index: int) -> None:
    with pytest.raises(ValueError):
        image_key("images", request_id, index)


def test_image_id_is_deterministic_sha256_prefix() -> None:
    expected = "im_" + hashlib.sha256(b"req-8f2c/0").hexdigest()[:12]
    assert image_id("req-8f2c", 0) == expected == image_id("req-8f2c", 0)
    assert image_id("req-8f2c", 1) != expected
    assert len(expected) == 15


# --- PNG ---------------------------------------------------------------------------------------


def _image(color: tuple[int, int, int] = (10, 200, 30)) -> Image.Image:
    image = Image.new("RGB", (32, 16), color)
    image.putpixel((3, 4), (255, 0, 0))
    return image


def test_png_round_trips_parameters_and_pixels() -> None:
    params = {"prompt": "corgi astronaut ✨", "seed": 123, "steps": 1, "cfg": 0.0}
    data = encode_png(_image(), params)
    assert data.startswith(b"\x89PNG")
    assert read_png_parameters(data) == params
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.getpixel((3, 4)) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "1", "I;16", "CMYK"])
@pytest.mark.parametrize("level", [0, 1, 6])
def test_png_keeps_the_pixels_of_every_mode(mode: str, level: int) -> None:
    source = _image().convert(mode)
    data = encode_png(source, {"x": 1}, compress_level=level)
    expected = "RGB" if mode in ("P", "1", "I;16", "CMYK") else mode
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == expected
        assert decoded.tobytes() == source.convert(expected).tobytes()
    assert read_png_parameters(data) == {"x": 1}


def test_png_bytes_are_deterministic() -> None:
    first = encode_png(_image(), {"b": 1, "a": 2})
    assert encode_png(_image(), {"a": 2, "b": 1}) == first  # key order does not matter
    assert encode_png(_image(), {"a": 2, "b": 2}) != first


def test_png_ignores_source_image_metadata() -> None:
    image = _image()
    image.info["dpi"] = (300, 300)
    image.info["comment"] = "from somewhere else"
    assert encode_png(image, {"x": 1}) == encode_png(_image(), {"x": 1})


def test_png_without_parameters_reads_empty() -> None:
    buffer = io.BytesIO()
    _image().save(buffer, format="PNG")
    assert read_png_parameters(buffer.getvalue()) == {}


# --- local store -------------------------------------------------------------------------------


def test_local_store_writes_and_returns_file_uri(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "images")
    url = store.put("images/r1/0.png", b"png-bytes")
    target = tmp_path / "images" / "images" / "r1" / "0.png"
    assert target.read_bytes() == b"png-bytes"
    assert url == target.resolve().as_uri()
    store.put("images/r1/0.png", b"second")  # redelivery overwrites
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["0.png"]  # no temp files left


def test_local_store_base_url(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, base_url="https://cdn.example.com/img/")
    assert store.put("a/0.png", b"x") == "https://cdn.example.com/img/a/0.png"


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "../x.png", "a/../../x.png", "a/./b.png", "a//b.png", "a\\..\\b.png"],
)
def test_local_store_rejects_unsafe_keys(tmp_path: Path, key: str) -> None:
    store = LocalImageStore(tmp_path / "root")
    with pytest.raises(StorageError) as info:
        store.put(key, b"x")
    assert info.value.retryable is False
    assert not (tmp_path / "x.png").exists()


def test_local_store_rejects_symlink_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        LocalImageStore(root).put("link/0.png", b"x")
    assert list(outside.iterdir()) == []


def test_local_store_failed_write_keeps_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalImageStore(tmp_path)
    store.put("k/0.png", b"old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError) as info:
        store.put("k/0.png", b"new")
    assert info.value.retryable is True  # ENOSPC may clear up
    assert (tmp_path / "k" / "0.png").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["0.png"]


def test_local_store_check(tmp_path: Path) -> None:
    LocalImageStore(tmp_path / "new").check()
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(StorageError):
        LocalImageStore(tmp_path / "file").check()


# --- S3 store without a server -----------------------------------------------------------------


def _s3(**kwargs: object) -> S3ImageStore:
    options: dict[str, object] = {
        "endpoint_url": "http://seaweedfs:8333",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }
    options.update(kwargs)
    return S3ImageStore("images", **options)  # type: ignore[arg-type]


def test_s3_base_url_form() -> None:
    store = _s3(base_url="https://cdn.example.com/media/")
    assert store.url_for("images/r/0.png") == "https://cdn.example.com/media/images/r/0.png"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "public, max-age=3600"),  # presigned, S3_PRESIGN_EXPIRY_SECONDS' default
        ({"presign_expiry_seconds": 60}, "public, max-age=60"),
        ({"presign_expiry_seconds": 7 * 24 * 3600}, "public, max-age=86400"),  # at most a day
        ({"base_url": "https://cdn.example.com/media/"}, "public, max-age=86400"),
        (
            {"presign_expiry_seconds": 60, "base_url": "https://cdn.example.com"},
            "public, max-age=86400",
        ),
    ],
)
def test_s3_images_are_not_cached_longer_than_their_presigned_urls_work(
    options: dict[str, object], expected: str
) -> None:
    store = _s3(**options)
    assert store.cache_control == expected
    with Stubber(store._client) as stub:  # type: ignore[arg-type]
        sent = {
            "Bucket": "images",
            "Key": "r/0.png",
            "Body": b"png",
            "ContentType": "image/png",
            "CacheControl": expected,
            "Metadata": {},
        }
        stub.add_response("put_object", {}, sent)
        store.put("r/0.png", b"png")
        stub.assert_no_pending_responses()


def test_s3_presigned_url_uses_public_endpoint() -> None:
    url = urlparse(_s3(public_endpoint_url="http://localhost:9000").url_for("images/r/0.png"))
    assert url.netloc == "localhost:9000"
    assert url.path == "/images/images/r/0.png"  # path-style: /bucket/key
    query = parse_qs(url.query)
    assert query["X-Amz-Expires"] == ["3600"]
    assert SECRET_KEY not in url.query
    internal = urlparse(_s3(presign_expiry_seconds=60).url_for("k.png"))
    assert internal.netloc == "seaweedfs:8333"
    assert parse_qs(internal.query)["X-Amz-Expires"] == ["60"]


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [("AccessDenied", 403, False), ("NoSuchBucket", 404, False), ("SlowDown", 503, True)],
)
def test_s3_error_classification_and_no_secrets(code: str, status: int, retryable: bool) -> None:
    store = _s3()
    with Stubber(store._client) as stub:  # type: ignore[arg-type]
        # Some servers echo request details; the wrapped error must not pass them on.
        message = f"denied for {ACCESS_KEY} / {SECRET_KEY}"
        stub.add_client_error("put_object", code, message, http_status_code=status)
        with pytest.raises(StorageError) as info:
            store.put("images/r/0.png", b"x")
    error = info.value
    assert (error.retryable, error.code, error.status) == (retryable, code, status)
    for text in (str(error), repr(error)):
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text
    assert error.__suppress_context__


def test_s3_store_repr_has_no_secrets() -> None:
    store = _s3()
    for text in (repr(store), str(store)):
        assert SECRET_KEY not in text
        assert ACCESS_KEY not in text
        assert "images" in text


# --- build_store -------------------------------------------------------------------------------


@dataclass
class FakeSettings:
    data_dir: Path
    storage_backend: Literal["s3", "local"] = "local"
    s3_endpoint_url: str | None = "http://127.0.0.1:9"
    s3_public_endpoint_url: str | None = None
    s3_bucket: str = "images"
    s3_region: str = "us-east-1"
    s3_create_bucket: bool = False
    s3_presign_expiry_seconds: int = 120
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    base_url: str | None = None


def test_build_store_local(tmp_path: Path) -> None:
    store = build_store(FakeSettings(data_dir=tmp_path))
    assert isinstance(store, LocalImageStore)
    assert store.name == "local"
    assert store.root == (tmp_path / "images").resolve()


def test_build_store_s3_without_network(tmp_path: Path) -> None:
    settings = FakeSettings(
        data_dir=tmp_path,
        storage_backend="s3",
        aws_access_key_id=SecretStr(ACCESS_KEY),
        aws_secret_access_key=SecretStr(SECRET_KEY),
    )
    store = build_store(settings)
    assert isinstance(store, S3ImageStore)
    assert store.name == "s3"
    assert "X-Amz-Expires=120" in store.url_for("a.png")
    assert SECRET_KEY not in repr(store)


def test_local_create_writes_once_and_refuses_a_taken_key(tmp_path: Path) -> None:
    from storage import AlreadyStored, supports_create

    store = LocalImageStore(tmp_path)
    store.create("r/0.png", b"first", metadata={"request-sha256": "a"})
    with pytest.raises(AlreadyStored):
        store.create("r/0.png", b"second", metadata={"request-sha256": "b"})
    assert store.get("r/0.png") == b"first"
    assert store.head("r/0.png") == {"request-sha256": "a"}
    assert store.keys_in("r", 10) == ["r/0.png"]  # no temporary file left behind
    assert supports_create(store, "probe/x") and store.get("probe/x") is None
