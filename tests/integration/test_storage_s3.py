"""S3ImageStore against a real S3 server: embedded SeaweedFS, or S3_ENDPOINT_URL when set."""

from __future__ import annotations

import dataclasses
import secrets
import time
import urllib.request
from typing import Any

import boto3
import pytest

from consumer.devtools.services import free_port
from consumer.generation.engine import GenerationJob, JobOutput
from consumer.output.images import STORED_NOTE, encode_output, store_output, stored_result
from schemas import GenerationResult, ImageRef
from storage import AlreadyStored, S3ImageStore, StorageError, encode_png, supports_create
from tests.fixtures.services import S3Endpoint

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def plain_client(endpoint_url: str, key: str | None, secret: str | None, region: str) -> Any:
    """A boto3 client that shares no code with the store, to read back what it wrote."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def sample_png() -> bytes:
    from PIL import Image

    return encode_png(Image.new("RGB", (64, 64), (12, 34, 56)), {"seed": 1, "prompt": "test"})


def put_and_read_back(store: S3ImageStore, client: Any) -> None:
    """Shared by the SeaweedFS and MinIO tests: put, then get_object and the presigned URL."""
    data, key = sample_png(), f"images/req-{secrets.token_hex(4)}/0.png"
    url = store.put(key, data)
    stored = client.get_object(Bucket=store.bucket, Key=key)
    assert stored["Body"].read() == data
    assert stored["ContentType"] == "image/png"
    assert stored.get("CacheControl") == store.cache_control
    with urllib.request.urlopen(url, timeout=10) as response:  # presigned GET
        assert response.read() == data
        # No cache may keep the image longer than the presigned URL works.
        max_age = response.headers["Cache-Control"].split("max-age=", 1)[1].split(",")[0]
        assert 0 < int(max_age) <= store.presign_expiry_seconds


def _store(endpoint: S3Endpoint, **kwargs: Any) -> S3ImageStore:
    options: dict[str, Any] = {
        "endpoint_url": endpoint.endpoint_url,
        "region": endpoint.region,
        "access_key_id": endpoint.access_key_id,
        "secret_access_key": endpoint.secret_access_key,
    }
    return S3ImageStore(kwargs.pop("bucket", endpoint.bucket), **{**options, **kwargs})


@pytest.fixture
def client(s3_endpoint: S3Endpoint) -> Any:
    e = s3_endpoint
    return plain_client(e.endpoint_url, e.access_key_id, e.secret_access_key, e.region)


def test_put_then_read_back(s3_endpoint: S3Endpoint, client: Any) -> None:
    store = _store(s3_endpoint)
    store.ensure_bucket()
    store.check()
    put_and_read_back(store, client)


def test_put_overwrites_same_key(s3_endpoint: S3Endpoint, client: Any) -> None:
    store = _store(s3_endpoint)
    store.ensure_bucket()
    store.put("images/same/0.png", b"first")
    store.put("images/same/0.png", b"second")
    body = client.get_object(Bucket=store.bucket, Key="images/same/0.png")["Body"].read()
    assert body == b"second"


def test_create_writes_once_and_refuses_a_taken_key(s3_endpoint: S3Endpoint, client: Any) -> None:
    """`If-None-Match: *` on the real store: the second create is refused, the first kept."""
    store = _store(s3_endpoint)
    store.ensure_bucket()
    key = f"images/create-{secrets.token_hex(4)}/0.png"
    store.create(key, b"first", metadata={"request-sha256": "a"})
    with pytest.raises(AlreadyStored):
        store.create(key, b"second", metadata={"request-sha256": "b"})
    assert client.get_object(Bucket=store.bucket, Key=key)["Body"].read() == b"first"
    assert store.head(key) == {"request-sha256": "a"}
    assert supports_create(store, f"images/probe-{secrets.token_hex(4)}")


def test_get_head_delete_and_metadata(s3_endpoint: S3Endpoint, client: Any) -> None:
    store = _store(s3_endpoint)
    store.ensure_bucket()
    key, data, digest = f"images/req-{secrets.token_hex(4)}/0.png", sample_png(), "ab" * 32
    assert (store.get(key), store.head(key)) == (None, None)
    store.delete(key)  # missing: no error
    store.put(key, data, metadata={"params-sha256": digest})
    assert store.get(key) == data
    assert store.head(key) == {"params-sha256": digest}
    # Real user metadata (x-amz-meta-*), readable by any S3 client.
    assert client.head_object(Bucket=store.bucket, Key=key)["Metadata"] == {"params-sha256": digest}
    store.put(key, b"second")  # an overwrite replaces the metadata too
    assert (store.get(key), store.head(key)) == (b"second", {})
    store.delete(key)
    assert (store.get(key), store.head(key)) == (None, None)


def test_small_json_object_under_attempts(s3_endpoint: S3Endpoint, client: Any) -> None:
    """A small JSON object (an attempt journal is one) round-trips."""
    store = _store(s3_endpoint)
    store.ensure_bucket()
    key = f"images/req-{secrets.token_hex(4)}/_attempt-1"
    store.put(key, b'{"attempts": 1}', "application/json")
    assert client.head_object(Bucket=store.bucket, Key=key)["ContentType"] == "application/json"
    assert store.get(key) == b'{"attempts": 1}'
    store.delete(key)
    assert store.get(key) is None


def test_keys_in_lists_the_objects_of_one_folder(s3_endpoint: S3Endpoint) -> None:
    store = _store(s3_endpoint)
    store.ensure_bucket()
    folder = f"images/_attempts/req-{secrets.token_hex(4)}"
    for name in ("2", "1", "sub/3"):
        store.put(f"{folder}/{name}", b"{}", "application/json")
    store.put(f"{folder}x/4", b"{}", "application/json")  # another request's folder
    assert store.keys_in(folder, 10) == [f"{folder}/1", f"{folder}/2"]
    assert store.keys_in(folder, 1) == [f"{folder}/1"]
    assert store.keys_in(f"{folder}-none", 10) == []
    for name in ("1", "2", "sub/3"):
        store.delete(f"{folder}/{name}")
    assert store.keys_in(folder, 10) == []  # not the emptied folder's own placeholder


def test_a_redelivered_request_is_answered_from_the_store(s3_endpoint: S3Endpoint) -> None:
    from PIL import Image

    store = _store(s3_endpoint)
    store.ensure_bucket()
    request_id = f"req-{secrets.token_hex(4)}"
    job = GenerationJob(request_id, "a red fox", "blurry", "standard", "m", 64, 64, 1, 0.0, (7, 8))
    output = JobOutput(job, [Image.new("RGB", (64, 64), (i, 9, 9)) for i in range(2)], 0.5)
    pngs = encode_output(output)
    generated = store_output(output, pngs, store, "images")
    served = stored_result(job, store, "images")
    assert served is not None and served.audit is not None
    assert unsigned(served) == unsigned(generated)
    assert (served.audit.duration_sec, served.audit.note) == ("0.000", STORED_NOTE)
    for image, png in zip(served.images, pngs, strict=True):
        with urllib.request.urlopen(image.url, timeout=10) as response:  # freshly signed, valid
            assert response.read() == png
    other_prompt = dataclasses.replace(job, prompt="a blue fox")  # the same request_id reused
    assert stored_result(other_prompt, store, "images") is None


def unsigned(result: GenerationResult) -> list[ImageRef]:
    """The images with presigned URLs cut to their path: a new signature may differ in time."""
    return [im.model_copy(update={"url": im.url.split("?")[0]}) for im in result.images]


def test_get_in_a_missing_bucket_is_an_error(s3_endpoint: S3Endpoint) -> None:
    store = _store(s3_endpoint, bucket=f"missing-{secrets.token_hex(4)}")
    with pytest.raises(StorageError) as info:  # not None: the bucket, not the key, is missing
        store.get("images/x/0.png")
    assert (info.value.retryable, info.value.code) == (False, "NoSuchBucket")


def test_bucket_is_auto_created(s3_endpoint: S3Endpoint, client: Any) -> None:
    bucket = f"auto-{secrets.token_hex(4)}"
    store = _store(s3_endpoint, bucket=bucket)
    with pytest.raises(StorageError) as info:
        store.check()
    assert info.value.retryable is False
    store.ensure_bucket()
    store.ensure_bucket()  # idempotent
    client.head_bucket(Bucket=bucket)
    put_and_read_back(store, client)


def test_closed_port_is_retryable_and_quick(s3_endpoint: S3Endpoint) -> None:
    store = _store(s3_endpoint, endpoint_url=f"http://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        store.put("images/x/0.png", b"x")
    assert info.value.retryable is True
    assert time.monotonic() - started < 15  # 3 attempts with backoff, connection refused
    with pytest.raises(StorageError):
        store.check()
    for call in (store.get, store.head, store.delete):
        with pytest.raises(StorageError) as info:
            call("images/x/0.png")
        assert info.value.retryable is True


def test_wrong_credentials_are_not_retryable(s3_endpoint: S3Endpoint) -> None:
    if not s3_endpoint.auth_enforced:
        pytest.skip("this S3 endpoint does not check credentials")
    wrong_secret = "wrong-" + secrets.token_hex(16)
    store = _store(s3_endpoint, secret_access_key=wrong_secret)
    with pytest.raises(StorageError) as info:
        store.put("images/x/0.png", b"x")
    error = info.value
    assert error.retryable is False
    assert error.status == 403
    assert wrong_secret not in str(error)
    assert wrong_secret not in repr(store)
