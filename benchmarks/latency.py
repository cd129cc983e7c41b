"""Latency of an idle worker on tiny-sdxl (CPU), next to the raw pipeline time of the same run,
and the cold start of a worker process: launch -> /health -> /ready -> first result.

`scripts/bench-latency [--requests N] [--json PATH]`. Starts its own Tansu and SeaweedFS on
127.0.0.1 in a temporary folder. The worker runs as a separate process (`python -m consumer run`),
as in production; the client here sends one request at a time and reads results with a 10 ms
fetch wait. A benchmark, not a test: it prints PASS/MISS against the targets only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks import latency_stages
from benchmarks.latency_stages import Trip
from benchmarks.throughput import (
    MODEL,
    THREADS,
    Stack,
    job,
    make_settings,
    percentile,
    request_bytes,
    start_stack,
    worker_topics,
)
from consumer.devtools.processes import free_port
from consumer.devtools.services import create_topics
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.settings import Settings

SIZES = (64, 512)
# (size, output format) rows of the idle-worker table: PNG as default, and JPEG at 512² to show
# the path without PNG's encoding cost (a 512² noise image: ~19 ms at level 1 on this CPU).
ROWS = ((64, "png"), (512, "png"), (512, "jpeg"))
WARMUP = 3
TARGET_OVERHEAD_S = 0.025
TARGET_COLD_START_S = 6.0


def raw_times(stack: Stack, count: int) -> dict[str, list[float]]:
    """The engine call alone (the pipeline, nothing of Kafka or S3), warm, in this process with
    nothing else running (no event loop polling beside it)."""
    settings = make_settings(stack, "raw")
    engine = DiffusersEngine(settings.engine_config())
    times: dict[str, list[float]] = {}
    for size in SIZES:
        for i in range(WARMUP):
            engine.generate([job(settings, size, (i,))], 0)
        times[str(size)] = []
        for i in range(count):
            started = time.perf_counter()
            engine.generate([job(settings, size, (100 + i,))], 0)
            times[str(size)].append(time.perf_counter() - started)
    return times


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, **settings.to_env(), "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "--env-file", "/nonexistent", "run"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


class Client:
    """Sends one request, waits for its result: the producer's view of latency."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        bootstrap = settings.kafka_bootstrap_servers
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        self.consumer = AIOKafkaConsumer(
            settings.result_topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="latest",
            fetch_max_wait_ms=10,
        )

    async def __aenter__(self) -> Client:
        await self.producer.start()
        await self.consumer.start()
        await self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            await self.consumer.position(tp)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.producer.stop()

    async def round_trip(
        self, size: int, seed: int, image_format: str = "png", timeout: float = 120
    ) -> Trip:
        """Seconds from send to result, seconds the worker's own pipeline call took."""
        request_id = f"lat-{uuid.uuid4().hex[:12]}"
        started = time.perf_counter()
        value = request_bytes(request_id, size, seed, image_format=image_format)
        await self.producer.send_and_wait(self.settings.request_topic, value, request_id.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = await self.consumer.getmany(timeout_ms=10)
            for record in (r for rs in got.values() for r in rs):
                if record.key == request_id.encode():
                    elapsed = time.perf_counter() - started
                    audit = json.loads(record.value)["audit"]
                    return Trip(elapsed, float(audit["duration_sec"]), request_id)
        raise TimeoutError(f"no result for {request_id}")


def wait_http(
    url: str, timeout: float, proc: subprocess.Popen[bytes], since: float | None = None
) -> float | None:
    """Seconds from `since` (a time.perf_counter() value; default: now) until `url` answers 200
    (None if it never does within `timeout`)."""
    started = time.perf_counter() if since is None else since
    while time.perf_counter() - started < timeout and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - local
                if response.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.02)
    return None


async def idle_latency(
    stack: Stack, count: int, workdir: Path, raw: dict[str, list[float]]
) -> dict[str, Any]:
    settings = make_settings(stack, f"lat-{uuid.uuid4().hex[:6]}", app_port=free_port())
    await create_topics(settings.kafka_bootstrap_servers, worker_topics(settings), 1)
    log = workdir / "idle-worker.log"
    proc = start_worker(settings, log)
    out: dict[str, Any] = {}
    trips_by_row: dict[str, list[Trip]] = {}
    try:
        ready = await asyncio.to_thread(
            wait_http, f"http://127.0.0.1:{settings.app_port}/ready", 120, proc
        )
        assert ready is not None, "the worker never became ready"
        async with Client(settings) as client:
            for size, image_format in ROWS:
                for i in range(WARMUP):
                    await client.round_trip(size, i, image_format)
                trips = [
                    await client.round_trip(size, 1000 + i, image_format) for i in range(count)
                ]
                trips_by_row[f"{size}² {image_format}"] = trips
                out[f"{size}² {image_format}"] = summary(trips, raw[str(size)])
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 60)
    for row, trips in trips_by_row.items():  # the log is complete once the worker stopped
        out[row]["stages_ms"] = latency_stages.breakdown(trips, log)
    return out


def summary(trips: list[Trip], raw: list[float]) -> dict[str, Any]:
    """The overhead of each request is its end-to-end time less its own pipeline call inside
    the worker (the audit's duration_sec): immune to the drift of a shared machine between the
    raw run and the worker run, which a difference of medians is not."""
    times = [trip.elapsed_s for trip in trips]
    overheads = [trip.elapsed_s - trip.pipeline_s for trip in trips]
    return {
        "p50_s": percentile(times, 0.5) or 0.0,
        "p95_s": percentile(times, 0.95) or 0.0,
        "raw_p50_s": percentile(raw, 0.5) or 0.0,
        "worker_pipeline_p50_s": percentile([trip.pipeline_s for trip in trips], 0.5) or 0.0,
        "overhead_p50_s": percentile(overheads, 0.5) or 0.0,
        "overhead_p95_s": percentile(overheads, 0.95) or 0.0,
    }


async def cold_start(stack: Stack, workdir: Path) -> dict[str, Any]:
    """A fresh worker process, the model already built on disk (a warm install): the request is
    sent at launch, before the worker has joined its group."""
    settings = make_settings(stack, f"cold-{uuid.uuid4().hex[:6]}", app_port=free_port())
    await create_topics(settings.kafka_bootstrap_servers, worker_topics(settings), 1)
    async with Client(settings) as client:
        launched = time.perf_counter()
        proc = start_worker(settings, workdir / "cold-worker.log")
        try:
            base = f"http://127.0.0.1:{settings.app_port}"
            first = asyncio.create_task(client.round_trip(64, 7))
            # Both from launch (the ready figure once counted from /health's answer).
            health = await asyncio.to_thread(wait_http, f"{base}/health", 60, proc, launched)
            ready = await asyncio.to_thread(wait_http, f"{base}/ready", 60, proc, launched)
            await first
            result = time.perf_counter() - launched
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.wait, 60)
    return {"health_s": health, "ready_s": ready, "first_result_s": result}


def render(report: dict[str, Any]) -> str:
    lines = [
        "| size, format | raw pipeline p50 | pipeline in the worker p50 | end to end p50 | p95 "
        "| overhead p50 | overhead p95 | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, row in report["idle"].items():
        ok = "PASS" if row["overhead_p50_s"] <= TARGET_OVERHEAD_S else "MISS"
        ms = {key: f"{value * 1000:.0f} ms" for key, value in row.items() if key != "stages_ms"}
        lines.append(
            f"| {size} | {ms['raw_p50_s']} | {ms['worker_pipeline_p50_s']} | {ms['p50_s']} | "
            f"{ms['p95_s']} | {ms['overhead_p50_s']} | {ms['overhead_p95_s']} | "
            f"≤ {TARGET_OVERHEAD_S * 1000:.0f} ms: {ok} |"
        )
    lines += [
        "",
        "where the overhead goes (p50 of each part, ms; see benchmarks/latency_stages.py):",
    ]
    lines += latency_stages.render({k: v["stages_ms"] for k, v in report["idle"].items()})
    cold = report["cold"]
    ok = "PASS" if cold["first_result_s"] <= TARGET_COLD_START_S else "MISS"
    lines.append("")
    lines.append(
        f"cold start: /health {cold['health_s']:.1f} s, /ready {cold['ready_s']:.1f} s, first 64² "
        f"result {cold['first_result_s']:.1f} s after launch (≤ {TARGET_COLD_START_S:g} s: {ok})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        workdir = Path(tmp)
        with start_stack(workdir) as stack:
            raw = raw_times(stack, args.requests)
            report = {
                "threads": THREADS,
                "model": MODEL,
                "idle": asyncio.run(idle_latency(stack, args.requests, workdir, raw)),
                "cold": asyncio.run(cold_start(stack, workdir)),
            }
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
