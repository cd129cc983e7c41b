"""The embedded stack: Tansu (Kafka API) and SeaweedFS (S3 API) on 127.0.0.1 under DATA_DIR/stack.

`stack up` starts both in the background (they outlive the command), creates the topics and the
bucket, and writes DATA_DIR/stack/stack.env with the variables a worker needs; `stack down` stops
them. Tansu keeps its data in a SeaweedFS bucket of its own (`tansu`, beside the images bucket),
so topics, records and committed offsets are still there after `stack down` and `stack up`.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from urllib.parse import urlparse

from consumer.devtools.broker_storage import S3Storage
from consumer.devtools.services import SeaweedS3, TansuBroker, create_topics
from consumer.settings import Settings

DEFAULT_S3_PORT = 8333
BROKER_BUCKET = "tansu"


def stack_dir(settings: Settings) -> Path:
    return settings.data_dir.resolve() / "stack"


def env_file(settings: Settings) -> Path:
    return stack_dir(settings) / "stack.env"


def _ports(settings: Settings) -> tuple[int, int]:
    kafka_port = int(settings.kafka_bootstrap_servers.split(",")[0].rsplit(":", 1)[1])
    s3_port = urlparse(settings.s3_endpoint_url or "").port or DEFAULT_S3_PORT
    return kafka_port, s3_port


def _credentials(folder: Path) -> tuple[str, str]:
    """A key pair made once per stack folder, so the store is not open to any key."""
    path = folder / "s3-credentials"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{secrets.token_hex(8)}\n{secrets.token_hex(20)}\n")
        path.chmod(0o600)
    key_id, secret = path.read_text().split()
    return key_id, secret


def _broker_storage(settings: Settings, s3_port: int, key_id: str, secret: str) -> S3Storage:
    """Tansu's data goes to a bucket of its own, never the images bucket."""
    bucket = BROKER_BUCKET if settings.s3_bucket != BROKER_BUCKET else f"{BROKER_BUCKET}-broker"
    return S3Storage(f"http://127.0.0.1:{s3_port}", bucket, key_id, secret)


def stack_up(settings: Settings, partitions: int = 4) -> Path:
    folder = stack_dir(settings)
    kafka_port, s3_port = _ports(settings)
    key_id, secret = _credentials(folder)
    if not SeaweedS3.is_running(folder / "seaweedfs"):
        SeaweedS3(
            folder / "seaweedfs",
            bucket=settings.s3_bucket,
            access_key=key_id,
            secret_key=secret,
            port=s3_port,
        ).start(detach=True, timeout=60)
    if not TansuBroker.is_running(folder / "tansu"):
        storage = _broker_storage(settings, s3_port, key_id, secret)
        broker = TansuBroker(folder / "tansu", port=kafka_port, storage=storage)
        broker.start(detach=True, timeout=30)
    bootstrap = f"127.0.0.1:{kafka_port}"
    topics = [settings.request_topic, settings.result_topic, settings.dlq_topic]
    optional = (settings.priority_topic, settings.control_topic, settings.progress_topic)
    topics += [t for t in optional if t]
    asyncio.run(create_topics(bootstrap, topics, partitions))
    lines = [
        f"KAFKA_BOOTSTRAP_SERVERS={bootstrap}",
        "KAFKA_ENABLE_IDEMPOTENCE=false",  # Tansu has no InitProducerId
        # Tansu holds a fetch that includes an empty partition (a worker's always includes its
        # priority partition) for the whole wait, even when records arrive on another meanwhile.
        "KAFKA_FETCH_MAX_WAIT_MS=10",
        f"S3_ENDPOINT_URL=http://127.0.0.1:{s3_port}",
        f"S3_BUCKET={settings.s3_bucket}",
        "STORAGE_BACKEND=s3",
        f"AWS_ACCESS_KEY_ID={key_id}",
        f"AWS_SECRET_ACCESS_KEY={secret}",
    ]
    path = env_file(settings)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def stack_down(settings: Settings) -> list[str]:
    folder = stack_dir(settings)
    stopped = []
    if TansuBroker.stop_from_pidfile(folder / "tansu"):
        stopped.append("tansu")
    if SeaweedS3.stop_from_pidfile(folder / "seaweedfs"):
        stopped.append("seaweedfs")
    return stopped
