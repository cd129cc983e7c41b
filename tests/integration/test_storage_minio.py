"""The S3 put/read-back test against MinIO in a container (testcontainers); needs Docker."""

from __future__ import annotations

import secrets

import pytest

from storage import S3ImageStore
from tests.fixtures.docker import DOCKER_ONLY
from tests.integration.test_storage_s3 import plain_client, put_and_read_back

pytestmark = [*DOCKER_ONLY, pytest.mark.timeout(300)]


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
