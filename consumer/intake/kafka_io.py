"""aiokafka clients built from the Kafka config, and the records the worker writes (bounded)."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError, UnknownError, UnsupportedVersionError

from consumer.intake.config import KafkaConfig
from consumer.stoppable import Backoff
from schemas import ErrorInfo, GenerationResult, bounded
from schemas.cloudevents import DEAD_LETTER_TYPE, RESULT_TYPE, cloudevent_headers
from schemas.request import CONTRACT_VERSION

log = logging.getLogger(__name__)


def security_options(kafka: KafkaConfig) -> dict[str, Any]:
    """SASL/TLS options shared by every client. The password never leaves this dict."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        cafile = str(kafka.ssl_cafile) if kafka.ssl_cafile else None
        options["ssl_context"] = ssl.create_default_context(cafile=cafile)
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = kafka.sasl_username
        password = kafka.sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options


def build_consumer(kafka: KafkaConfig) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers,
        group_id=kafka.group_id,
        enable_auto_commit=False,  # offsets are committed only after the result is published
        auto_offset_reset="earliest",
        session_timeout_ms=kafka.session_timeout_ms,
        heartbeat_interval_ms=max(1000, kafka.session_timeout_ms // 4),
        max_poll_interval_ms=300_000,
        # A broker that holds a fetch until this passes (Tansu does, even when records arrive)
        # would add it to every request's latency; Kafka answers as soon as records arrive.
        fetch_max_wait_ms=kafka.fetch_max_wait_ms,
        # Fetch limits well above what a producer may write: a record over them could not be
        # fetched at all, so it could not even be dead-lettered.
        fetch_max_bytes=kafka.max_fetch_bytes * 2,
        max_partition_fetch_bytes=kafka.max_fetch_bytes,
        client_id="sdxl-worker",
        **security_options(kafka),
    )


# Brokers that do not implement InitProducerId: Kafka's own "unsupported" answers, and the
# UnknownError that the embedded Tansu broker gives. Anything else (connection refused, a
# timeout, a coordinator still loading) is transient and retried.
IDEMPOTENCE_UNSUPPORTED = (UnsupportedVersionError, UnknownError)


async def start_producer(
    kafka: KafkaConfig, stop: asyncio.Event, backoff: Backoff | None = None
) -> AIOKafkaProducer:
    """An idempotent producer where the broker supports it; a plain one (with a warning) only
    where the broker says it does not. Transient start-up errors are retried until `stop`
    (StopRequested), with `backoff` (default: 0.5 s, doubling up to 10 s)."""
    idempotent = kafka.enable_idempotence
    backoff = backoff or Backoff(0.5, 10.0)
    while True:
        producer = _producer(kafka, idempotent)
        try:
            await producer.start()
            return producer
        except IDEMPOTENCE_UNSUPPORTED as exc:
            await producer.stop()
            if not idempotent:
                raise
            log.warning(
                "broker refused the idempotent producer (%s); falling back to a plain producer",
                type(exc).__name__,
            )
            idempotent = False
        except KafkaError as exc:
            await producer.stop()
            name, delay = type(exc).__name__, backoff.delay
            log.warning("producer start failed (%s); retrying in %.1fs", name, delay)
            await backoff.wait(stop)


def _producer(kafka: KafkaConfig, idempotent: bool) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=kafka.bootstrap_servers,
        acks="all",
        enable_idempotence=idempotent,
        max_request_size=kafka.max_request_size,
        linger_ms=0,
        request_timeout_ms=30_000,
        client_id="sdxl-worker",
        **security_options(kafka),
    )


@dataclass(frozen=True)
class OutRecord:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def result_record(
    topic: str, result: GenerationResult, source: str, trace: list[tuple[str, bytes]]
) -> OutRecord:
    """The result, bounded, with the CloudEvents binary-mode headers (ce_subject = request_id)
    and the request's W3C trace context."""
    request_id = result.request_id or ""
    headers = [
        ("contract-version", CONTRACT_VERSION.encode()),
        *cloudevent_headers(RESULT_TYPE, source, request_id),
        *trace,
    ]
    value = bounded(result).model_dump_json().encode()
    return OutRecord(topic, key=request_id.encode(), value=value, headers=headers)


# Room left in a dead letter for the record's own framing and the dlq.* headers.
_DEAD_LETTER_OVERHEAD = 4096
_MAX_DEAD_LETTER_KEY = 1024
_MAX_ORIGINAL_HEADERS = 16 * 1024


def dead_letter_record(
    topic: str, record: ConsumerRecord[Any, Any], error: ErrorInfo, limit: int, source: str
) -> OutRecord:
    """The original bytes, key and headers, with headers that say where they came from and why.

    Bounded by `limit` (the producer's max request size): a larger event keeps its first bytes,
    and `dlq.truncated` says how large the original was."""
    key, value = record.key, record.value
    headers, dropped = _capped_headers(record.headers or ())
    notes = []
    if key is not None and len(key) > _MAX_DEAD_LETTER_KEY:
        notes.append(f"key:{len(key)}")
        key = key[:_MAX_DEAD_LETTER_KEY]
    if dropped:
        notes.append(f"headers:{dropped}")
    header_bytes = sum(len(name) + len(data) for name, data in headers)
    budget = limit - _DEAD_LETTER_OVERHEAD - len(key or b"") - header_bytes
    if value is not None and len(value) > budget:
        notes.append(f"value:{len(value)}")
        value = value[: max(0, budget)]
    if key is None and value is None:
        key = b""  # legal in Kafka, but aiokafka cannot send a record with neither
    headers += _dlq_headers(record, error)
    if notes:
        headers.append(("dlq.truncated", ",".join(notes).encode()))
    # The value is the original bytes, whatever they are: no content-type of its own.
    headers += cloudevent_headers(DEAD_LETTER_TYPE, source, None, content_type=None)
    return OutRecord(topic, key, value, headers)


def _capped_headers(original: Any) -> tuple[list[tuple[str, bytes]], int]:
    kept: list[tuple[str, bytes]] = []
    size = dropped = 0
    for name, value in original:
        value = value or b""
        size += len(name) + len(value)
        ours = name.startswith(("dlq.", "ce_"))  # replaced by the dead letter's own
        if ours or size > _MAX_ORIGINAL_HEADERS:
            dropped += not ours
            continue
        kept.append((name, value))
    return kept, dropped


def _dlq_headers(record: ConsumerRecord[Any, Any], error: ErrorInfo) -> list[tuple[str, bytes]]:
    return [
        ("dlq.source.topic", record.topic.encode()),
        ("dlq.source.partition", str(record.partition).encode()),
        ("dlq.source.offset", str(record.offset).encode()),
        ("dlq.error.code", error.code.value.encode()),
        ("dlq.error.message", error.message[:1000].encode("utf-8", "replace")),
    ]


async def send(producer: AIOKafkaProducer, out: OutRecord) -> None:
    """Produce one record and wait for the broker's acknowledgement."""
    delivery = await producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
    await delivery


async def send_all(producer: AIOKafkaProducer, records: list[OutRecord]) -> list[Exception | None]:
    """Produce every record, then wait for each acknowledgement (they travel together): what
    each one raised, or None. In one task, not a task per record."""
    deliveries: list[asyncio.Future[Any] | Exception] = []
    for out in records:
        try:
            deliveries.append(
                await producer.send(out.topic, key=out.key, value=out.value, headers=out.headers)
            )
        except Exception as exc:  # refused before it was sent: too large, unknown topic...
            deliveries.append(exc)
    outcomes: list[Exception | None] = []
    for delivery in deliveries:
        if isinstance(delivery, Exception):
            outcomes.append(delivery)
            continue
        try:
            await delivery
            outcomes.append(None)
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


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


CLOSE_TIMEOUT_SECONDS = 3.0


async def close_quietly(closing: Awaitable[Any], what: str) -> None:
    """Closing must not hang on a broker that went away, nor fail the shutdown."""
    try:
        await asyncio.wait_for(closing, CLOSE_TIMEOUT_SECONDS)
    except TimeoutError:
        log.warning("%s: gave up after %.0fs", what, CLOSE_TIMEOUT_SECONDS)
    except Exception as exc:
        log.warning("%s failed: %s", what, exc)
