"""Reads, deletes and metadata of the stores, without a server: local files, stubbed S3 calls."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from consumer.client.oneshot import _FileStore
from storage import ImageStore, LocalImageStore, S3ImageStore, StorageError
from storage.base import check_metadata

KEY = "images/r1/0.png"


# --- metadata rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [
        {"Params-Sha256": "x"},  # upper case would come back lower case from S3
        {"a_b": "x"},
        {"": "x"},
        {"k": "é"},  # not ASCII
        {"k": " padded"},  # header whitespace is trimmed
        {"k": "line\nbreak"},
        {"k": "x" * 2048},
    ],
)
def test_metadata_s3_could_not_round_trip_is_refused(metadata: dict[str, str]) -> None:
    with pytest.raises(StorageError) as info:
        check_metadata(metadata)
    assert (info.value.retryable, info.value.code) == (False, "invalid_metadata")


def test_plain_metadata_passes() -> None:
    check_metadata(None)
    check_metadata({"params-sha256": "ab" * 32, "attempts": "3", "empty": ""})


# --- local store -------------------------------------------------------------------------------


def test_local_get_head_delete_round_trip(tmp_path: Path) -> None:
    store: ImageStore = LocalImageStore(tmp_path)
    assert (store.get(KEY), store.head(KEY)) == (None, None)
    store.put(KEY, b"png", metadata={"params-sha256": "abc"})
    assert store.get(KEY) == b"png"
    assert store.head(KEY) == {"params-sha256": "abc"}
    store.delete(KEY)
    assert (store.get(KEY), store.head(KEY)) == (None, None)
    store.delete(KEY)  # missing: no error
    assert list((tmp_path / "images" / "r1").iterdir()) == []  # the sidecar went too


def test_local_put_replaces_metadata_like_s3(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    store.put(KEY, b"old", metadata={"params-sha256": "old"})
    store.put(KEY, b"new")  # no metadata: the old one must not describe the new bytes
    assert store.head(KEY) == {}
    store.put(KEY, b"newer", metadata={"params-sha256": "new"})
    assert store.head(KEY) == {"params-sha256": "new"}
    sidecar = tmp_path / "images" / "r1" / "0.png.meta.json"
    assert sidecar.read_text() == '{"params-sha256": "new"}'


def test_local_failed_write_leaves_no_stale_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalImageStore(tmp_path)
    store.put(KEY, b"old", metadata={"params-sha256": "old"})

    def broken_replace(src: str, dst: str) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError):
        store.put(KEY, b"new", metadata={"params-sha256": "new"})
    # Old bytes, no metadata: unverifiable (a reader regenerates), never wrongly "verified".
    assert (store.get(KEY), store.head(KEY)) == (b"old", {})


def test_local_small_json_objects_under_attempts(tmp_path: Path) -> None:
    """The crash-loop guard's marker: any content type, a key in the request's folder."""
    store = LocalImageStore(tmp_path)
    key = "images/req-8f2c/_attempt-1"
    store.put(key, b'{"attempts": 1}', "application/json")
    assert store.get(key) == b'{"attempts": 1}'
    store.delete(key)
    assert store.get(key) is None


def test_local_keys_in_lists_the_objects_of_one_folder(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    for key in ("a/_attempts/r/2", "a/_attempts/r/1", "a/_attempts/r/sub/3", "a/_attempts/rr/4"):
        store.put(key, b"{}", "application/json", {"x": "1"})  # sidecars are not objects
    (tmp_path / "a" / "_attempts" / "r" / ".5.abc.tmp").write_bytes(b"")  # a write in progress
    assert store.keys_in("a/_attempts/r", 10) == ["a/_attempts/r/1", "a/_attempts/r/2"]
    assert store.keys_in("a/_attempts/r/", 1) == ["a/_attempts/r/1"]
    assert store.keys_in("a/_attempts/none", 10) == []
    assert store.keys_in("a/_attempts/r/1", 10) == []  # an object, not a folder
    with pytest.raises(StorageError):
        store.keys_in("a/../..", 10)


def test_local_directory_keys_read_as_missing(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    store.put(KEY, b"png")
    for key in ("images/r1", "images/r1/0.png/deeper"):
        assert (store.get(key), store.head(key)) == (None, None)
        store.delete(key)
    assert store.get(KEY) == b"png"


@pytest.mark.parametrize("key", ["../x", "a//b", "a/./b", "images/r1/0.png.meta.json"])
def test_local_reads_check_keys_like_put(tmp_path: Path, key: str) -> None:
    store = LocalImageStore(tmp_path / "root")
    for call in (store.get, store.head, store.delete):
        with pytest.raises(StorageError) as info:
            call(key)
        assert info.value.code == "invalid_key"


def test_local_hand_edited_sidecar_reads_as_no_metadata(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path)
    store.put(KEY, b"png", metadata={"params-sha256": "abc"})
    (tmp_path / "images" / "r1" / "0.png.meta.json").write_bytes(b"\xff not json")
    assert store.head(KEY) == {}


def test_local_read_errors_are_wrapped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalImageStore(tmp_path)
    store.put(KEY, b"png", metadata={"params-sha256": "abc"})

    def failing(self: Path) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(Path, "read_bytes", failing)
    for call in (store.get, store.head):
        with pytest.raises(StorageError) as info:
            call(KEY)
        assert (info.value.retryable, info.value.code) == (True, "EIO")  # the device may recover


# --- oneshot's --out store ---------------------------------------------------------------------


def test_file_store_maps_every_operation_to_the_out_names(tmp_path: Path) -> None:
    store: ImageStore = _FileStore(tmp_path / "fox.png")
    assert store.put("r/0.png", b"zero", metadata={"params-sha256": "x"}).endswith("/fox.png")
    store.put("r/1.png", b"one")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fox-1.png", "fox.png"]  # no sidecars
    assert (store.get("r/0.png"), store.get("r/1.png")) == (b"zero", b"one")
    assert store.head("r/0.png") == {}
    assert store.url_for("r/1.png") == (tmp_path / "fox-1.png").resolve().as_uri()
    store.delete("r/1.png")
    assert store.get("r/1.png") is None
    store.put("_attempts/r", b"{}", "application/json")  # other keys keep their own names
    assert (tmp_path / "_attempts" / "r").read_bytes() == b"{}"


# --- S3 without a server -----------------------------------------------------------------------


def _s3() -> S3ImageStore:
    return S3ImageStore(
        "images", endpoint_url="http://seaweedfs:8333", access_key_id="k", secret_access_key="s"
    )


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def test_s3_put_sends_metadata_and_content_type() -> None:
    store = _s3()
    with Stubber(store._client) as stub:  # type: ignore[arg-type]
        expected = {
            "Bucket": "images",
            "Key": "images/_attempts/r",
            "Body": b"{}",
            "ContentType": "application/json",
            "CacheControl": store.cache_control,
            "Metadata": {"params-sha256": "abc"},
        }
        stub.add_response("put_object", {}, expected)
        store.put("images/_attempts/r", b"{}", "application/json", {"params-sha256": "abc"})
        stub.assert_no_pending_responses()


def test_s3_missing_keys_are_none_and_deletes_succeed() -> None:
    store = _s3()
    with Stubber(store._client) as stub:  # type: ignore[arg-type]
        stub.add_client_error("get_object", "NoSuchKey", http_status_code=404)
        stub.add_client_error("head_object", "404", http_status_code=404)
        stub.add_client_error("delete_object", "NoSuchKey", http_status_code=404)
        assert store.get(KEY) is None
        assert store.head(KEY) is None
        store.delete(KEY)


def test_s3_reads_return_bytes_and_lowercased_metadata() -> None:
    store = _s3()
    with Stubber(store._client) as stub:  # type: ignore[arg-type]
        stub.add_response("get_object", {"Body": _body(b"png")}, {"Bucket": "images", "Key": KEY})
        stub.add_response("head_object", {"Metadata": {"Params-Sha256": "abc"}})
        stub.add_response("delete_object", {})
        assert store.get(KEY) == b"png"
        assert store.head(KEY) == {"params-sha256": "abc"}
        store.delete(KEY)


@pytest.mark.parametrize(
    ("method", "code", "status", "retryable"),
    [
        ("get_object", "NoSuchBucket", 404, False),  # a missing bucket is no missing key
        ("get_object", "AccessDenied", 403, False),
        ("head_object", "403", 403, False),
        ("head_object", "503", 503, True),
        ("delete_object", "SlowDown", 503, True),
    ],
)
def test_s3_read_errors_are_wrapped(method: str, code: str, status: int, retryable: bool) -> None:
    store = _s3()
    call = {"get_object": store.get, "head_object": store.head, "delete_object": store.delete}
    with Stubber(store._client) as stub:  # type: ignore[arg-type]
        stub.add_client_error(method, code, http_status_code=status)
        with pytest.raises(StorageError) as info:
            call[method](KEY)
    assert (info.value.retryable, info.value.code, info.value.status) == (retryable, code, status)
    assert info.value.__suppress_context__
