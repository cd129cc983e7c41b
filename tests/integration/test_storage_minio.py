"""The S3 put/read-back test against MinIO in a container (testcontainers); needs Docker."""

from __future__ import annotations

import secrets

import pytest

from storage import S3ImageStore
from tests.integration.test_storage_s3 import plain_client, put_and_read_back


def _docker_unavailable() -> str | None:
    """Return why Docker cannot be used here, or None when an engine answers."""
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=5).ping()
    except Exception as exc:
        return f"no Docker engine reachable ({type(exc).__name__})"
    try:
        import testcontainers.minio  # noqa: F401  (needs the `minio` client package)
    except ImportError as exc:
        return f"testcontainers MinIO module unavailable: {exc}"
    return None


_SKIP_REASON = _docker_unavailable()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.docker,
    pytest.mark.timeout(300),
    pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or ""),
]


def test_put_then_read_back_on_minio() -> None:
    from testcontainers.minio import MinioContainer

    with MinioContainer() as minio:
        config = minio.get_config()
        endpoint_url = f"http://{config['endpoint']}"
        key, secret = config["access_key"], config["secret_key"]
        store = S3ImageStore(
            f"images-{secrets.token_hex(4)}",
            endpoint_url=endpoint_url,
            access_key_id=key,
            secret_access_key=secret,
        )
        store.ensure_bucket()
        put_and_read_back(store, plain_client(endpoint_url, key, secret, "us-east-1"))
