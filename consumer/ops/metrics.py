"""Prometheus metrics of one worker, on a registry of its own (tests build several workers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consumer.generation.engine import CacheStats
from schemas import GenerationResult

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _CacheCollector(Collector):
    """Reads the cache counters at scrape time, so the engine knows nothing of Prometheus."""

    def __init__(self, stats: Callable[[], CacheStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats()
        yield CounterMetricFamily(
            "model_cache_hits", "Requests served by a loaded model.", stats.hits
        )
        yield CounterMetricFamily(
            "model_cache_misses", "Requests that loaded a model.", stats.misses
        )
        yield CounterMetricFamily(
            "model_cache_evictions", "Models unloaded to make room.", stats.evictions
        )
        yield CounterMetricFamily(
            "model_load_failures",
            "Model loads that failed (a failure is remembered for MODEL_RETRY_SECONDS).",
            stats.failed_loads,
        )
        yield GaugeMetricFamily(
            "model_cache_bytes", "Bytes of the loaded pipelines' weights.", stats.loaded_bytes
        )
        loads = GaugeMetricFamily(
            "model_load_seconds", "Seconds the last load of each model took.", labels=["model"]
        )
        for model, seconds in stats.load_seconds.items():
            loads.add_metric([model], seconds)
        yield loads


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)  # process_resident_memory_bytes, process_start_time_seconds...
        r.register(PLATFORM_COLLECTOR)
        self.generations = Counter(
            "image_generations",
            "Requests finished, by status and model.",
            ["status", "model"],
            registry=r,
        )
        self.generation_seconds = Histogram(
            "image_generation_seconds",
            "Engine time per batch.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "request_latency_seconds",
            "From the request's Kafka timestamp to its result, by lane (priority, regular).",
            ["lane"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_errors = Counter(
            "request_errors",
            "Requests finished with an error, by error code and model.",
            ["code", "model"],
            registry=r,
        )
        self.ready = Gauge("worker_ready", "1 while /ready answers 200.", registry=r)
        self.unhealthy = Gauge(
            "worker_unhealthy", "1 once the watchdog gave up on this worker.", registry=r
        )
        self.batch_size = Histogram(
            "batch_size_images", "Images per engine call.", buckets=(1, 2, 4, 8, 16, 32), registry=r
        )
        # Read from the offset trackers at scrape time: derived, so it can never drift negative.
        self.in_flight = Gauge(
            "requests_in_flight", "Requests taken and not finished yet.", registry=r
        )
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records behind the end of each partition of REQUEST_TOPIC.",
            ["partition"],
            registry=r,
        )
        self.priority_consumer_lag = Gauge(
            "priority_consumer_lag",
            "Records behind the end of each partition of PRIORITY_TOPIC.",
            ["partition"],
            registry=r,
        )
        self.dead_letters = Counter(
            "dead_letters", "Events sent to the dead-letter topic.", registry=r
        )
        self.storage_retries = Counter("storage_retries", "Retried uploads.", registry=r)
        self.publish_retries = Counter(
            "publish_retries", "Publish rounds retried while the broker was away.", registry=r
        )
        self.publish_refused = Counter(
            "publish_refused",
            "Records the broker refused for good (a fallback was sent instead).",
            ["topic"],
            registry=r,
        )
        self.stored_answers = Counter(
            "stored_answers",
            "Redelivered requests answered from images already stored (no generation).",
            registry=r,
        )
        self.cancels_received = Counter(
            "cancels_received",
            "Cancel commands read from CONTROL_TOPIC (every worker reads every one).",
            registry=r,
        )
        self.partition_revocations = Counter(
            "partition_revocations",
            "Rebalances that took partitions away from this worker.",
            registry=r,
        )
        self.progress_dropped = Counter(
            "progress_dropped",
            "Progress events not sent (broker away, too many in flight).",
            registry=r,
        )
        self.internal_errors = Counter(
            "internal_errors", "Batches that raised unexpectedly (failed results).", registry=r
        )
        self.purge_auth_failures = Counter(
            "purge_auth_failures",
            "POST /v1/models/purge calls refused for a missing or invalid X-API-Key.",
            registry=r,
        )

    def count_result(self, result: GenerationResult, model: str) -> None:
        self.generations.labels(result.status.value, model).inc()
        if result.error is not None:
            self.request_errors.labels(result.error.code.value, model).inc()

    def lag_gauge(self, priority: bool) -> Gauge:
        """The lag of a partition of PRIORITY_TOPIC (True) or of REQUEST_TOPIC."""
        return self.priority_consumer_lag if priority else self.consumer_lag

    def watch_worker(self, ready: Callable[[], bool], unhealthy: Callable[[], bool]) -> None:
        self.ready.set_function(lambda: float(ready()))
        self.unhealthy.set_function(lambda: float(unhealthy()))

    def watch_cache(self, stats: Callable[[], CacheStats]) -> None:
        self.registry.register(_CacheCollector(stats))
