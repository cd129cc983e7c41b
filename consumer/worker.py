"""The Kafka worker: one group member that turns request records into result records.

Acknowledgement (acks.py): images stored, result acknowledged by the broker, then the offset
committed, never past a request that is not finished. Intake (intake/loop.py) reserves capacity
first: when `max_batches_in_flight` batches are running, the regular partitions are paused and
the loop keeps polling (PRIORITY_TOPIC's partitions while there is room for priority work), so
heartbeats and the poll interval never lapse during a long batch; whatever a poll returns is
taken and queued, never dropped. A watchdog (watchdog.py) turns a hung engine or a stalled
intake into an unhealthy worker that stops and exits non-zero, leaving the stuck work
uncommitted for redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError

from consumer.generation.batch_runner import BatchRunner
from consumer.generation.engine import Engine
from consumer.generation.inflight import BatchRun
from consumer.generation.inputs import InputReader
from consumer.generation.processing import BatchProcessor
from consumer.generation.scheduler import Scheduler
from consumer.intake import kafka_io
from consumer.intake.config import ControlConfig, KafkaConfig, PollingConfig
from consumer.intake.control import ControlListener, StopBoard
from consumer.intake.lanes import Lanes
from consumer.intake.loop import Intake, gate
from consumer.intake.rebalance import RebalanceListener
from consumer.ops.health import Health, HealthConfig
from consumer.ops.metrics import WorkerMetrics
from consumer.output.acknowledgement import Acknowledger
from consumer.output.answers import Answers
from consumer.output.config import OutputConfig
from consumer.output.progress import ProgressReporter
from consumer.output.publishing import Publisher
from consumer.requests.config import TriageConfig
from consumer.requests.journal import AttemptJournal
from consumer.requests.journal_store import owner_id
from consumer.requests.lookup import StoreLookup
from consumer.requests.triage import Triage, Work
from consumer.settings import Settings
from consumer.stoppable import StopRequested, unless_set
from storage import ImageStore

log = logging.getLogger(__name__)

EXIT_UNHEALTHY = 70  # EX_SOFTWARE: the orchestrator should restart this worker


class Worker:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        store: ImageStore,
        metrics: WorkerMetrics | None = None,
        exit_when_idle: float | None = None,
        clients: tuple[AIOKafkaConsumer, AIOKafkaProducer] | None = None,
        engine_thread: ThreadPoolExecutor | None = None,
    ) -> None:
        """`clients`: a consumer and a started producer to use instead of building them.
        `engine_thread`: the one thread that runs `engine` (one already building it: app.py).
        The worker is the composition root: each part gets its own small config, cut from
        `settings` here."""
        self.settings = settings
        self._kafka = KafkaConfig.from_settings(settings)
        self.engine = engine
        self.metrics = metrics or WorkerMetrics()
        self.metrics.watch_cache(lambda: engine.stats)
        self.metrics.watch_worker(lambda: self.ready, lambda: self.unhealthy is not None)
        self._store = store
        self._exit_when_idle = exit_when_idle
        self._clients = clients
        self._lanes = Lanes(settings.request_topic, settings.priority_topic)
        self._scheduler = Scheduler(
            settings.max_batches_in_flight,
            settings.batch_lookahead,
            engine.loaded_models,
            urgent=lambda batch: self._lanes.urgent(batch[0].record.topic),
        )
        self._stops = StopBoard(settings.cancel_retention_seconds, holds=self._scheduler.holds)
        self._engine_thread = engine_thread or ThreadPoolExecutor(1, thread_name_prefix="engine")
        self._io_threads = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="io")
        self._processor = BatchProcessor(
            engine,
            store,
            key_prefix=settings.s3_key_prefix,
            timeout_seconds=settings.generation_timeout_seconds,
            max_backoff_seconds=settings.storage_retry_max_backoff_seconds,
            png_compress_level=settings.png_compress_level,
            engine_thread=self._engine_thread,
            io_threads=self._io_threads,
            on_storage_retry=self.metrics.storage_retries.inc,
            stops=self._stops.due,
            reuse_stored=settings.reuse_stored_images,
            inputs=InputReader(
                store,
                int(settings.max_input_image_bytes),
                settings.min_image_size,
                settings.max_image_size,
            ),
        )
        self._stopping = asyncio.Event()  # intake stops; retries on the intake path give up
        self._abandoning = asyncio.Event()  # the drain deadline passed; every retry gives up
        self._consumer: AIOKafkaConsumer | None = None
        self._acks: Acknowledger | None = None
        self._intake_loop: Intake | None = None
        self._runner: BatchRunner | None = None
        self._journal: AttemptJournal | None = None
        self.draining = False
        self.health = Health(
            HealthConfig.from_settings(settings),
            engine,
            store,
            on_fail=self._stopping.set,
            draining=lambda: self.draining,
        )

    # --- status ---------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets an event."""
        self._stopping.set()

    def fail(self, reason: str) -> None:
        """Give up on this process: stop intake, exit non-zero after a short grace."""
        self.health.fail(reason)

    @property
    def unhealthy(self) -> str | None:
        return self.health.unhealthy

    @property
    def exit_code(self) -> int:
        return EXIT_UNHEALTHY if self.unhealthy else 0

    @property
    def completed(self) -> int:
        """Requests finished (outcome published and committed) by this worker."""
        return self._acks.completed if self._acks is not None else 0

    @property
    def broker_connected(self) -> bool:
        return self._consumer is not None and not self.draining

    @property
    def ready(self) -> bool:
        return self.not_ready_reason() is None

    def not_ready_reason(self) -> str | None:
        if self.unhealthy:
            return self.unhealthy
        if self.draining:
            return "draining"
        if self._consumer is None and self.settings.join_after_warmup:
            waiting = self.health.model_wait()  # no join before the default model is warm
            if waiting is not None:
                return waiting
        if self._consumer is None or not self.assignment():
            return "no partitions assigned yet"
        return self.health.readiness_problem()

    def assignment(self) -> list[TopicPartition]:
        return sorted(self._consumer.assignment()) if self._consumer is not None else []

    # --- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until a stop request, idleness (when asked) or the watchdog; see exit_code."""
        watchers = self.health.start(self._engine_thread)
        if self.settings.control_topic:  # CONTROL_TOPIC empty: no cancels
            control = ControlConfig.from_settings(self.settings)
            cancelled = self.metrics.cancels_received.inc
            listener = ControlListener(control, self._kafka, self._stops, self._stopping, cancelled)
            watchers.append(asyncio.create_task(listener.run()))
        consumer: AIOKafkaConsumer | None = None
        producer: AIOKafkaProducer | None = None
        try:
            consumer, producer = await self._connect()
            self._wire(consumer, producer)
            assert self._journal is not None
            await self._journal.check_store()
            watchers.append(asyncio.create_task(self._journal.keep_leased()))
            if self.settings.join_after_warmup:  # take partitions only once able to work,
                # however many tries loading the default model takes (health.py)
                await unless_set(self.health.model_loaded(), self._stopping)
            if not self._stopping.is_set() and await unless_set(consumer.start(), self._stopping):
                self._consumer = consumer
                log.info("worker started", extra={"partitions": list(map(str, self.assignment()))})
                await self._intake(consumer)
        except StopRequested:
            pass
        finally:
            await self._drain_and_close(consumer, producer)
            for task in watchers:
                task.cancel()

    def _wire(self, consumer: AIOKafkaConsumer, producer: AIOKafkaProducer) -> None:
        settings = self.settings
        output = OutputConfig.from_settings(settings)
        publisher = Publisher(producer, self.metrics, on_retry=self.health.step)
        acks = self._acks = Acknowledger(output, publisher, consumer, self.metrics)
        journal = self._journal = AttemptJournal(
            self._store,
            settings.s3_key_prefix,
            owner_id(),
            acks.landed,
        )
        progress = ProgressReporter(output, producer, self.metrics)
        answers = Answers(acks, self.metrics, progress, journal, settings.log_prompts)
        triaged = Triage(
            TriageConfig.from_settings(settings),
            acks,
            answers,
            StoreLookup(self._store, settings.s3_key_prefix),
            journal,
            self._stops.due,
            progress,
            step=self.health.step,
        )
        self._intake_loop = Intake(
            self._scheduler,
            self._lanes,
            triaged,
            self._run,
            self._stopping,
            self.health.step,
            self.fail,
        )
        self._runner = BatchRunner(
            answers, self.metrics, journal, progress, self._processor, self._abandoning, self.fail
        )
        listener = RebalanceListener(self, consumer)
        consumer.subscribe(self._lanes.topics, listener=listener)

    async def _connect(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        if self._clients is not None:
            return self._clients
        producer = await kafka_io.start_producer(self._kafka, self._stopping)
        return kafka_io.build_consumer(self._kafka), producer

    async def _drain_and_close(
        self, consumer: AIOKafkaConsumer | None, producer: AIOKafkaProducer | None
    ) -> None:
        self.draining = True
        self._release(self._scheduler.drop_waiting())  # not started: delivered again
        if consumer is not None:
            with contextlib.suppress(IllegalStateError):
                consumer.pause(*consumer.assignment())
        grace = self.settings.unhealthy_exit_grace_seconds if self.unhealthy else None
        in_flight = self._scheduler.in_flight
        await in_flight.drain(grace or self.settings.drain_timeout_seconds, self._abandon)
        if self._journal is not None:  # nothing runs here any more: nobody waits for this one
            await kafka_io.close_quietly(self._journal.close(), "attempt journal")
        if consumer is not None:
            await kafka_io.close_quietly(kafka_io.leave_group(consumer), "leave group")
        closing = [kafka_io.close_quietly(c.stop(), "close") for c in (consumer, producer) if c]
        await asyncio.gather(*closing)
        self._engine_thread.shutdown(wait=False, cancel_futures=True)
        self._io_threads.shutdown(wait=False, cancel_futures=True)
        log.info("worker stopped", extra={"completed": self.completed, "exit": self.exit_code})

    def _abandon(self) -> None:
        """Past the drain's grace: the engine stops at its next step, every retry gives up."""
        self._processor.abandon()
        self._abandoning.set()

    # --- intake ---------------------------------------------------------------------------------

    async def _intake(self, consumer: AIOKafkaConsumer) -> None:
        assert self._intake_loop is not None
        polling = PollingConfig.from_settings(self.settings)
        await self._intake_loop.run(consumer, polling, self.metrics, self._exit_when_idle)

    # --- batches --------------------------------------------------------------------------------

    def _run(self, batch: list[Work]) -> BatchRun:
        assert self._runner is not None
        return partial(self._runner.run, batch)

    def _release(self, batches: Iterable[list[Work]]) -> None:
        if self._acks is not None:
            self._acks.release(r for batch in batches for w in batch for r in w.records)

    # --- rebalance ------------------------------------------------------------------------------

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Drop work not started, let running work finish within a bound, commit what is done."""
        self.metrics.partition_revocations.inc()
        self._release(self._scheduler.drop_waiting(revoked))
        for tp in revoked:  # another member reports these partitions now
            with contextlib.suppress(KeyError):
                self.metrics.lag_gauge(self._lanes.urgent(tp.topic)).remove(str(tp.partition))
        bound = min(
            self.settings.drain_timeout_seconds, self.settings.kafka_session_timeout_ms / 2000
        )
        in_flight = self._scheduler.in_flight
        await in_flight.wait(bound, in_flight.touching(revoked))
        if self._acks is not None:
            await self._acks.on_revoked(revoked)
        if self._journal is not None:
            self._journal.released({(tp.topic, tp.partition) for tp in revoked})

    async def on_assigned(self, consumer: AIOKafkaConsumer, assigned: set[TopicPartition]) -> None:
        """Newly assigned partitions start unpaused: pause those of a lane with no room for more
        work (loop.gate), so that their records wait in the broker rather than in a poll that
        nobody asked for."""
        if self._stopping.is_set():
            consumer.pause(*assigned)
        else:
            gate(consumer, self._lanes, self._scheduler)
        if self._acks is not None:
            await self._acks.on_assigned(assigned)
        if self._journal is not None:  # before any of their records is triaged
            await self._journal.ready({(tp.topic, tp.partition) for tp in assigned})
