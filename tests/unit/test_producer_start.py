"""The idempotent producer falls back to a plain one only when the broker says it does not
support it; transient start-up errors are retried until the worker stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError, UnknownError, UnsupportedVersionError

from consumer.intake import kafka_io
from consumer.intake.config import KafkaConfig
from consumer.settings import Settings
from consumer.stoppable import Backoff, StopRequested


class StubProducer:
    def __init__(self, idempotent: bool, error: BaseException | None) -> None:
        self.idempotent = idempotent
        self.error = error
        self.stopped = False

    async def start(self) -> None:
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        self.stopped = True


def scripted(monkeypatch: pytest.MonkeyPatch, errors: list[BaseException | None]) -> list[Any]:
    """Each producer built takes the next error (None: it starts)."""
    built: list[StubProducer] = []

    def build(kafka: KafkaConfig, idempotent: bool) -> StubProducer:
        producer = StubProducer(idempotent, errors.pop(0))
        built.append(producer)
        return producer

    monkeypatch.setattr(kafka_io, "_producer", build)
    return built


def no_wait() -> Backoff:
    return Backoff(0.0, 0.0)


SETTINGS = KafkaConfig.from_settings(
    Settings(_env_file=None, kafka_enable_idempotence=True)  # type: ignore[call-arg]
)


@pytest.mark.parametrize("refusal", [UnknownError(), UnsupportedVersionError()])
async def test_a_broker_without_init_producer_id_gets_a_plain_producer(
    monkeypatch: pytest.MonkeyPatch, refusal: BaseException
) -> None:
    built = scripted(monkeypatch, [refusal, None])
    producer = await kafka_io.start_producer(SETTINGS, asyncio.Event(), no_wait())
    assert [p.idempotent for p in built] == [True, False] and producer is built[-1]
    assert built[0].stopped


async def test_a_transient_error_is_retried_and_stays_idempotent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = scripted(monkeypatch, [KafkaConnectionError(), KafkaConnectionError(), None])
    producer = await kafka_io.start_producer(SETTINGS, asyncio.Event(), no_wait())
    assert [p.idempotent for p in built] == [True, True, True] and producer is built[-1]


async def test_retries_end_when_the_worker_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    scripted(monkeypatch, [KafkaConnectionError()] * 3)
    stop = asyncio.Event()
    stop.set()
    with pytest.raises(StopRequested):
        await kafka_io.start_producer(SETTINGS, stop, no_wait())
