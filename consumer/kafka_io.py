"""aiokafka clients built from the settings, and the two records the worker writes."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

from consumer.settings import Settings
from schemas import ErrorInfo, GenerationResult

log = logging.getLogger(__name__)


def security_options(settings: Settings) -> dict[str, Any]:
    """SASL/TLS options shared by every client. The password never leaves this dict."""
    options: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        options["ssl_context"] = ssl.create_default_context(cafile=cafile)
    if settings.kafka_security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def build_consumer(settings: Settings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.group_id,
        enable_auto_commit=False,  # offsets are committed only after the result is published
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.kafka_session_timeout_ms // 4),
        max_poll_interval_ms=300_000,
        fetch_max_bytes=settings.kafka_max_request_size * 4,
        max_partition_fetch_bytes=settings.kafka_max_request_size,
        client_id="sdxl-worker",
        **security_options(settings),
    )


async def start_producer(settings: Settings) -> AIOKafkaProducer:
    """An idempotent producer where the broker supports it; a plain one (with a warning) where it
    refuses InitProducerId, as the embedded Tansu broker does."""
    if settings.kafka_enable_idempotence:
        producer = _producer(settings, idempotent=True)
        try:
            await producer.start()
            return producer
        except KafkaError as exc:
            await producer.stop()
            log.warning(
                "broker refused the idempotent producer (%s); falling back to a plain producer",
                type(exc).__name__,
            )
    producer = _producer(settings, idempotent=False)
    await producer.start()
    return producer


def _producer(settings: Settings, idempotent: bool) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=idempotent,
        max_request_size=settings.kafka_max_request_size,  # dead letters can be large
        linger_ms=0,
        request_timeout_ms=30_000,
        client_id="sdxl-worker",
        **security_options(settings),
    )


async def publish_results(
    producer: AIOKafkaProducer, topic: str, results: list[GenerationResult]
) -> None:
    """Send all, then wait until the broker has acknowledged every one (sending them one by one
    would cost a broker round trip per result)."""
    acks = [
        await producer.send(
            topic,
            key=(result.request_id or "").encode(),
            value=result.model_dump_json().encode(),
            headers=[("content-type", b"application/json"), ("contract-version", b"1")],
        )
        for result in results
    ]
    await asyncio.gather(*acks)


def dead_letter_headers(
    record: ConsumerRecord[Any, Any], error: ErrorInfo
) -> list[tuple[str, bytes]]:
    original = [(k, v) for k, v in (record.headers or ()) if not k.startswith("dlq.")]
    return [
        *original,
        ("dlq.source.topic", record.topic.encode()),
        ("dlq.source.partition", str(record.partition).encode()),
        ("dlq.source.offset", str(record.offset).encode()),
        ("dlq.error.code", error.code.value.encode()),
        ("dlq.error.message", error.message[:1000].encode("utf-8", "replace")),
    ]


async def publish_dead_letters(
    producer: AIOKafkaProducer,
    topic: str,
    letters: list[tuple[ConsumerRecord[Any, Any], ErrorInfo]],
) -> None:
    """The original bytes, untouched, with headers that say where they came from and why."""
    acks = []
    for record, error in letters:
        # A record with neither key nor value is legal in Kafka but not sendable with aiokafka.
        key = b"" if record.key is None and record.value is None else record.key
        headers = dead_letter_headers(record, error)
        acks.append(await producer.send(topic, key=key, value=record.value, headers=headers))
    await asyncio.gather(*acks)


async def leave_group(consumer: AIOKafkaConsumer) -> None:
    """Send LeaveGroup even in generation 0.

    aiokafka only leaves for generation > 0; brokers that number the first generation 0 (Tansu)
    would then make the next member wait a whole session timeout for our partitions."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is None or getattr(coordinator, "generation", -1) != 0:
        return
    try:
        from aiokafka.protocol.group import LeaveGroupRequest

        await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
    except (KafkaError, AttributeError, TypeError, OSError) as exc:
        log.info("explicit LeaveGroup failed: %s", exc)
