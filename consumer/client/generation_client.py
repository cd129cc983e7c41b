"""`GenerationClient`: the producer side of the contract, on aiokafka.

    async with GenerationClient(settings) as client:
        request_id = await client.submit({"prompt": "a lighthouse", "params": {"format": "webp"}})
        async for event in client.progress(request_id):
            print(event.stage, event.step, event.total_steps)
        result = await client.wait(request_id, timeout=60)
        # image-to-image (1.2): params = {"init_image": await client.upload_init_image(png),
        #                                  "strength": 0.5, "steps": 2}

It imports neither torch nor diffusers (the contract, the settings and aiokafka only), so any
service can use it. Listening starts in `start()`, from the end of the result and progress
topics: results are seen for ids submitted (or `watch`ed) after that, whenever they arrive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from consumer.client.inputs import upload_init_image
from consumer.intake import kafka_io
from consumer.intake.config import KafkaConfig
from consumer.settings import Settings
from consumer.stoppable import StopRequested
from schemas import CancelCommand, GenerationRequest, GenerationResult, ProgressEvent
from schemas.cloudevents import CONTROL_TYPE, REQUEST_TYPE, ce_source, cloudevent_headers
from schemas.control import control_value
from schemas.progress import parse_progress
from storage import ImageStore, build_store

log = logging.getLogger(__name__)

# Ids whose records are buffered at once; past it the oldest watch is dropped (a client that
# submits without ever waiting must not grow without bound).
MAX_WATCHES = 10_000
_CLIENT_ID = "sdxl-worker-client"


class BrokerUnavailable(ConnectionError):
    """No broker answered within the client's connect timeout."""


class _Watch:
    """What arrived for one request_id: its progress events in order, then its result."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.result: GenerationResult | None = None


class GenerationClient:
    """Submit requests, wait for their results, follow their progress, cancel them.

    `listen=False` makes a send-only client (submit, cancel): no consumer is started, and
    `wait` / `progress` raise RuntimeError. `source` is the ce_source of what it sends
    (default urn:sdxl-worker:client:<hostname>). `priority=True` sends requests to
    PRIORITY_TOPIC (the priority lane: they start before every regular request waiting) unless
    `submit` says otherwise."""

    def __init__(
        self,
        settings: Settings,
        *,
        listen: bool = True,
        source: str | None = None,
        connect_timeout: float = 30.0,
        priority: bool = False,
    ) -> None:
        self.settings = settings
        self.priority = priority
        self.source = source or ce_source(f"client:{socket.gethostname()}")
        self._listen = listen
        self._connect_timeout = connect_timeout
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watches: dict[str, _Watch] = {}
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> GenerationClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect (BrokerUnavailable after `connect_timeout`), then start listening."""
        give_up = asyncio.Event()
        timer = asyncio.get_running_loop().call_later(self._connect_timeout, give_up.set)
        try:
            self._producer = await kafka_io.start_producer(
                KafkaConfig.from_settings(self.settings), give_up
            )
        except StopRequested:
            raise BrokerUnavailable(
                f"no broker at {self.settings.kafka_bootstrap_servers} "
                f"within {self._connect_timeout:g}s"
            ) from None
        finally:
            timer.cancel()
        if self._listen:
            await self._start_listening(self._producer)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._consumer is not None:
            await kafka_io.close_quietly(self._consumer.stop(), "client consumer stop")
        if self._producer is not None:
            await kafka_io.close_quietly(self._producer.stop(), "client producer stop")
        self._reader = self._consumer = self._producer = None

    async def submit(
        self,
        request: GenerationRequest | Mapping[str, Any],
        headers: Sequence[tuple[str, bytes]] = (),
        priority: bool | None = None,
    ) -> str:
        """Send `request` (a model, or a JSON-able mapping: a missing request_id gets a fresh
        one) to REQUEST_TOPIC keyed by its request_id, with CloudEvents headers and `headers`
        (e.g. a traceparent); return the request_id. Validation is the worker's: a mapping is
        sent as given, and an invalid one is answered `rejected`. `priority` (default: the
        client's): to PRIORITY_TOPIC instead (ValueError when it is empty)."""
        topic = self.request_topic(priority)
        request_id, value = _encode_request(request)
        self._watch(request_id)  # before sending: the result may come back at once
        record_headers = [
            *cloudevent_headers(REQUEST_TYPE, self.source, request_id),
            *headers,
        ]
        await self._send(topic, request_id, value, record_headers)
        return request_id

    def request_topic(self, priority: bool | None = None) -> str:
        """Where `submit` sends (`priority`: default, the client's); ValueError without a lane."""
        if not (self.priority if priority is None else priority):
            return self.settings.request_topic
        if not self.settings.priority_topic:
            raise ValueError("PRIORITY_TOPIC is empty: there is no priority lane")
        return self.settings.priority_topic

    async def upload_init_image(
        self, data: bytes, store: ImageStore | None = None
    ) -> dict[str, str]:
        """Image-to-image (1.2): store a PNG, JPEG or WebP image under INPUT_PREFIX in the
        worker's bucket (`store`, else one built from the settings) and return the
        `params.init_image` naming it: `{"key": "inputs/<sha256>.png"}`."""
        target = store or build_store(self.settings)
        prefix = self.settings.input_prefix
        return await asyncio.to_thread(upload_init_image, target, prefix, data)

    async def cancel(self, request_id: str) -> None:
        """Ask every worker to cancel `request_id` (ValueError for an invalid id). The request's
        result then says `cancelled`, unless it was answered before the command arrived."""
        command = CancelCommand(request_id=request_id)
        headers = cloudevent_headers(CONTROL_TYPE, self.source, request_id)
        await self._send(self.settings.control_topic, request_id, control_value(command), headers)

    def watch(self, request_id: str) -> None:
        """Buffer the result and progress of a request submitted elsewhere, from now on."""
        self._require_listening()
        self._watch(request_id)

    async def wait(self, request_id: str, timeout: float | None = None) -> GenerationResult | None:
        """The result of `request_id`, or None when none arrived within `timeout` seconds (None:
        no limit). A returned result is handed out once: the id is no longer watched."""
        self._require_listening()
        watch = self._watch(request_id)
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: watch.result is not None)
        except TimeoutError:
            return None
        self._watches.pop(request_id, None)
        return watch.result

    async def progress(self, request_id: str) -> AsyncIterator[ProgressEvent]:
        """The progress events of `request_id`, from the first one buffered; ends after the
        `finished` event or once the result is in (events are best effort: some may never
        come, and with PROGRESS_TOPIC empty none do). Use it alongside `wait`, not after."""
        self._require_listening()
        watch = self._watch(request_id)
        seen = 0
        while True:
            fresh = await self._next_events(watch, seen)
            seen += len(fresh)
            for event in fresh:
                yield event
                if event.stage == "finished":
                    return
            if not fresh:  # the result is in, and no event came before it
                return

    # --- internals -----------------------------------------------------------------------------

    async def _next_events(self, watch: _Watch, seen: int) -> list[ProgressEvent]:
        """The events after the first `seen`, once there are any or the result is in."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(watch.events) > seen or _done(watch))
            return watch.events[seen:]

    def _watch(self, request_id: str) -> _Watch:
        watch = self._watches.get(request_id)
        if watch is None:
            if len(self._watches) >= MAX_WATCHES:
                self._watches.pop(next(iter(self._watches)))
            watch = self._watches[request_id] = _Watch()
        return watch

    def _require_listening(self) -> None:
        if self._reader is None:
            raise RuntimeError("this client does not listen (listen=False, or not started)")

    async def _send(
        self, topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        if self._producer is None:
            raise RuntimeError("the client is not started: use `async with` or start()")
        await self._producer.send_and_wait(topic, value=value, key=key.encode(), headers=headers)

    async def _start_listening(self, producer: AIOKafkaProducer) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            client_id=_CLIENT_ID,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
            **kafka_io.security_options(KafkaConfig.from_settings(self.settings)),
        )
        await consumer.start()
        self._consumer = consumer
        partitions = await _partitions(producer, self.settings.result_topic)
        if self.settings.progress_topic:
            try:
                partitions += await _partitions(producer, self.settings.progress_topic)
            except KafkaError as exc:  # progress is optional: results still work without it
                log.warning("progress topic unavailable (%s); no progress", type(exc).__name__)
        consumer.assign(partitions)
        await consumer.seek_to_end()
        for partition in partitions:
            await consumer.position(partition)  # pin the end before any request goes out
        self._reader = asyncio.create_task(self._read(consumer))

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        handlers: dict[str, Callable[[ConsumerRecord[Any, Any]], None]] = {
            self.settings.result_topic: self._on_result,
            self.settings.progress_topic: self._on_progress,
        }
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=1000)
            except KafkaError as exc:
                log.warning("client fetch failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(1.0)
                continue
            records = [r for rs in batches.values() for r in rs]
            for record in records:
                handlers[record.topic](record)
            if records:
                async with self._changed:
                    self._changed.notify_all()

    def _on_result(self, record: ConsumerRecord[Any, Any]) -> None:
        watch = self._watches.get(_key(record))
        if watch is None or record.value is None:
            return  # another client's request, or a tombstone
        try:
            watch.result = GenerationResult.model_validate_json(record.value)
        except ValidationError:
            log.warning("unreadable result record at offset %s", record.offset)

    def _on_progress(self, record: ConsumerRecord[Any, Any]) -> None:
        event = parse_progress(record.value)
        watch = self._watches.get(event.request_id) if event is not None else None
        if event is not None and watch is not None:
            watch.events.append(event)


def _done(watch: _Watch) -> bool:
    return watch.result is not None


def _key(record: ConsumerRecord[Any, Any]) -> str:
    key = record.key
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else ""


async def _partitions(producer: AIOKafkaProducer, topic: str) -> list[TopicPartition]:
    # Through the producer's metadata: where the broker creates topics on demand, this does.
    found = await producer.partitions_for(topic)
    return [TopicPartition(topic, partition) for partition in sorted(found)]


def new_request_id() -> str:
    """A fresh request_id for a request that names none."""
    return f"req-{uuid.uuid4().hex}"


def _encode_request(request: GenerationRequest | Mapping[str, Any]) -> tuple[str, bytes]:
    if isinstance(request, GenerationRequest):
        # Unset fields stay out: the worker, not this process, fills its own defaults (model).
        return request.request_id, request.model_dump_json(exclude_unset=True).encode()
    body = dict(request)
    request_id = body.setdefault("request_id", new_request_id())
    if not isinstance(request_id, str):
        raise ValueError("request_id must be a string")
    return request_id, json.dumps(body).encode()
