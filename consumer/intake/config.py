"""The small configs of intake's parts, cut from the settings by the worker (vLLM's way: a reader
sees from a signature what a part depends on, which the whole Settings hides)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import SecretStr

if TYPE_CHECKING:
    from consumer.settings import Settings


@dataclass(frozen=True)
class KafkaConfig:
    """How every client of this worker talks to the brokers."""

    bootstrap_servers: str
    group_id: str
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: Path | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    session_timeout_ms: int = 10_000
    fetch_max_wait_ms: int = 100
    max_fetch_bytes: int = 2 * 1024 * 1024
    max_request_size: int = 1024 * 1024
    enable_idempotence: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> KafkaConfig:
        return cls(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.group_id,
            security_protocol=settings.kafka_security_protocol,
            ssl_cafile=settings.kafka_ssl_cafile,
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_username=settings.kafka_sasl_username,
            sasl_password=settings.kafka_sasl_password,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
            max_fetch_bytes=settings.kafka_max_fetch_bytes,
            max_request_size=settings.kafka_max_request_size,
            enable_idempotence=settings.kafka_enable_idempotence,
        )


@dataclass(frozen=True)
class PollingConfig:
    max_batch_size: int  # images per engine call: what a fetch tries to fill
    max_batch_wait_ms: int  # how long a fetch waits for companions when a backlog waits
    keepalive_poll_seconds: float  # how often a busy worker polls its paused partitions

    @classmethod
    def from_settings(cls, settings: Settings) -> PollingConfig:
        return cls(
            settings.max_batch_size, settings.max_batch_wait_ms, settings.keepalive_poll_seconds
        )


@dataclass(frozen=True)
class ControlConfig:
    topic: str  # CONTROL_TOPIC
    retention_seconds: float  # how far back a worker reads cancels, and how long it keeps them
    clock_skew_seconds: float = 0.0  # allowance for a producer's clock (clocks.py)

    @classmethod
    def from_settings(cls, settings: Settings) -> ControlConfig:
        return cls(
            settings.control_topic, settings.cancel_retention_seconds, settings.clock_skew_seconds
        )
