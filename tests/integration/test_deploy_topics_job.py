"""The topic Job of deploy/kubernetes runs: its inline script, with the environment its pod gets
(the ConfigMap, its own variables and the Kafka credential of the example Secret, nothing else of
that Secret) pointed at the session's broker, creates the topics (the priority lane's too), is
idempotent, and raises the partition count of the request, priority and result topics when
REQUEST_PARTITIONS grows (where the broker implements CreatePartitions: Kafka does, the embedded
Tansu does not)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from consumer.settings import Settings
from tests.unit.test_deploy_kubernetes import container_env, job_pod

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]


def run_job(settings: Settings, partitions: int, home: Path) -> subprocess.CompletedProcess[str]:
    pod = job_pod("overlays/gpu")
    (job,) = pod["containers"]
    env: dict[str, Any] = {"PATH": os.environ.get("PATH", ""), "HF_HUB_OFFLINE": "1"}
    env.update(container_env("overlays/gpu", pod, job["name"]))
    env.update(
        {
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "REQUEST_TOPIC": settings.request_topic,
            "PRIORITY_TOPIC": settings.priority_topic,
            "RESULT_TOPIC": settings.result_topic,
            "DLQ_TOPIC": settings.dlq_topic,
            "REQUEST_PARTITIONS": str(partitions),
            "REPLICATION_FACTOR": "1",  # one broker here
            "HOME": str(home),
        }
    )
    python, *arguments = job["command"]
    assert python == "python"
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def partition_counts(settings: Settings) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        topics = [settings.request_topic, settings.result_topic, settings.dlq_topic]
        topics.append(settings.priority_topic)
        return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()


async def test_the_topic_job_creates_the_topics_once(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    expected = {settings.request_topic: 3, settings.result_topic: 3, settings.dlq_topic: 1}
    expected[settings.priority_topic] = 3
    for _ in range(2):  # the second run finds them and changes nothing
        run = run_job(settings, 3, tmp_path)
        assert run.returncode == 0, run.stderr
        assert f"{settings.request_topic}: 3 partitions" in run.stdout
        assert await partition_counts(settings) == expected


async def test_the_topic_job_raises_partitions(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings()
    assert run_job(settings, 2, tmp_path).returncode == 0
    raised = run_job(settings, 4, tmp_path)
    if "CreatePartitionsRequest cannot be used" in raised.stderr:
        # The embedded broker (Tansu) does not implement CreatePartitions; Kafka does. Run with
        # KAFKA_BOOTSTRAP_SERVERS pointing at a Kafka broker to cover this path.
        pytest.skip("the broker does not implement CreatePartitions")
    assert raised.returncode == 0, raised.stderr
    assert "raising partitions 2 -> 4" in raised.stdout
    counts = await partition_counts(settings)
    assert counts[settings.request_topic] == counts[settings.result_topic] == 4
    assert counts[settings.priority_topic] == 4
    assert counts[settings.dlq_topic] == 1
