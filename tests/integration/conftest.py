from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from consumer.devtools.services import create_topics
from consumer.settings import Settings
from tests.fixtures.services import S3Endpoint


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One DATA_DIR per test session, so the tiny model is built once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def engine_settings(shared_data_dir: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=shared_data_dir,
        default_model="tiny-sdxl",
        allowed_models=["tiny-sdxl", "stabilityai/sdxl-turbo"],
        hf_hub_offline=True,
        torch_threads=2,
        generation_timeout_seconds=60,
    )


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, shared_data_dir: Path) -> Callable[..., Settings]:
    """Worker settings on the session's broker and store, with topics and group of this test."""
    kafka: str = request.getfixturevalue("kafka_bootstrap")
    s3: S3Endpoint = request.getfixturevalue("s3_endpoint")
    suffix = uuid.uuid4().hex[:8]

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": shared_data_dir,
            "default_model": "tiny-sdxl",
            "allowed_models": ["tiny-sdxl", "stabilityai/sdxl-turbo"],
            "hf_hub_offline": True,
            "torch_threads": 2,
            "app_port": 0,
            "kafka_bootstrap_servers": kafka,
            "request_topic": f"requests-{suffix}",
            "priority_topic": f"priority-{suffix}",
            "result_topic": f"results-{suffix}",
            "dlq_topic": f"dlq-{suffix}",
            "group_id": f"workers-{suffix}",
            "kafka_session_timeout_ms": 6000,
            # As `stack up` writes it: Tansu holds a fetch with an empty partition all the wait.
            "kafka_fetch_max_wait_ms": 10,
            "storage_backend": "s3",
            "s3_endpoint_url": s3.endpoint_url,
            "s3_bucket": s3.bucket,
            "s3_region": s3.region,
            "aws_access_key_id": s3.access_key_id,
            "aws_secret_access_key": s3.secret_access_key,
            "s3_key_prefix": f"t-{suffix}",
            "drain_timeout_seconds": 30,
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return build


@pytest.fixture
async def contract_settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings with control and progress topics of this test's own, all topics created.
    Progress events uncoalesced (PROGRESS_INTERVAL_SECONDS=0): these tests follow every stage
    of requests that take well under the default interval on the tiny model."""
    suffix = make_settings().group_id  # unique to this test
    topics_of_its_own = {
        "control_topic": f"control-{suffix}",
        "progress_topic": f"progress-{suffix}",
    }
    built = make_settings(**topics_of_its_own, progress_interval_seconds=0)
    topics = [built.request_topic, built.result_topic, built.progress_topic, built.control_topic]
    await create_topics(built.kafka_bootstrap_servers, topics, 2)
    return built
