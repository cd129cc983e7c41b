"""The worker end-to-end test again, on Kafka and MinIO containers (testcontainers).

Runs where a Docker engine answers; skips cleanly elsewhere. The tests are the same functions
as on the embedded broker and store: only the two service fixtures differ.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fixtures.docker import DOCKER_ONLY
from tests.fixtures.services import S3Endpoint
from tests.integration.test_worker_kafka import (  # noqa: F401  (collected here as well)
    test_invalid_events_get_rejected_results_or_dead_letters,
    test_requests_become_completed_results_with_downloadable_pngs,
)

pytestmark = [*DOCKER_ONLY, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer().with_kraft() as kafka:
        yield kafka.get_bootstrap_server()


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[S3Endpoint]:
    from testcontainers.minio import MinioContainer

    with MinioContainer() as minio:
        config = minio.get_config()
        yield S3Endpoint(
            f"http://{config['endpoint']}",
            "images",
            config["access_key"],
            config["secret_key"],
            auth_enforced=True,
        )
