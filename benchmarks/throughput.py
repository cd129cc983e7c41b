"""Throughput of the worker on tiny-sdxl (CPU), each figure next to its baseline from the same run.

`scripts/bench [--quick] [--json PATH]`; `scripts/bench --event-path N`: only the event path
against the raw aiokafka loop, N rounds side by side. Starts its own Tansu and SeaweedFS on
127.0.0.1 in a temporary folder and stops them at the end. A benchmark, not a test: it prints
PASS/MISS only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import secrets
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from PIL import Image

from consumer.devtools.services import SeaweedS3, TansuBroker, create_topics
from consumer.generation.engine import Engine, GenerationJob, JobOutput
from consumer.generation.engine.diffusers_engine import DiffusersEngine
from consumer.generation.engine.fake import FakeEngine
from consumer.generation.engine.loading import PipelineLoader, choose_placement
from consumer.ops.logs import JsonFormatter
from consumer.output.images import store_output
from consumer.settings import Settings
from consumer.worker import Worker
from storage import AlreadyStored, ImageStore, build_store

THREADS = 2
SECTION_TIMEOUT = 300.0
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
MODEL = "tiny-sdxl"
HEADERS = [("content-type", b"application/json"), ("contract-version", b"1")]


@dataclass(frozen=True)
class Scale:
    requests: int
    events: int
    warmup_events: int
    raw_images: int


FULL, QUICK = Scale(64, 2000, 200, 64), Scale(16, 300, 100, 16)


@dataclass(frozen=True)
class Stack:
    bootstrap: str
    s3: SeaweedS3
    data_dir: Path


class NullEngine(FakeEngine):
    """A zero-cost engine: the same 8x8 image whatever the size asked, no bookkeeping."""

    IMAGE = Image.new("RGB", (8, 8))

    def generate(
        self,
        jobs: Sequence[GenerationJob],
        timeout_seconds: float,
        cancel: Any = None,
        on_step: Any = None,
    ) -> list[JobOutput]:
        """The engine protocol's call (the step hook came with contract 1.1: without it here
        every call raised and the event-path section measured failures)."""
        return [JobOutput(job, [self.IMAGE] * job.num_images, 0.0) for job in jobs]


class MemoryStore:
    name = "memory"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.metadata: dict[str, dict[str, str]] = {}

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        self.objects[key] = data
        self.metadata[key] = dict(metadata or {})
        return self.url_for(key)

    def create(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        if key in self.objects:
            raise AlreadyStored(key)
        return self.put(key, data, content_type, metadata)

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def get_prefix(self, key: str, limit: int) -> bytes | None:
        data = self.objects.get(key)
        return None if data is None else data[: limit + 1]

    def head(self, key: str) -> dict[str, str] | None:
        return self.metadata.get(key) if key in self.objects else None

    def delete(self, key: str) -> None:
        self.objects.pop(key, None)
        self.metadata.pop(key, None)

    def keys_in(self, folder: str, limit: int) -> list[str]:
        start = folder.rstrip("/") + "/"
        inside = [k for k in self.objects if k.startswith(start) and "/" not in k[len(start) :]]
        return sorted(inside)[:limit]

    def url_for(self, key: str) -> str:
        return f"memory://bench/{key}"

    def check(self) -> None:
        """Always usable."""


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def make_settings(stack: Stack, name: str, **overrides: Any) -> Settings:
    s3 = stack.s3
    # fmt: off
    values: dict[str, Any] = {
        "data_dir": stack.data_dir, "default_model": MODEL, "allowed_models": [MODEL],
        "hf_hub_offline": True, "torch_threads": THREADS, "app_port": 0,
        "kafka_bootstrap_servers": stack.bootstrap, "request_topic": f"{name}.requests",
        "result_topic": f"{name}.results", "dlq_topic": f"{name}.dlq", "group_id": f"{name}.g",
        "control_topic": f"{name}.control", "progress_topic": f"{name}.progress",
        "priority_topic": f"{name}.priority",
        "kafka_session_timeout_ms": 6000, "kafka_enable_idempotence": False,
        "kafka_fetch_max_wait_ms": 10,  # as `stack up` writes it (Tansu)
        "s3_endpoint_url": s3.endpoint_url, "s3_bucket": s3.bucket, "s3_key_prefix": name,
        "aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key,
    }
    # fmt: on
    return Settings(_env_file=None, **(values | overrides))


def worker_topics(settings: Settings) -> list[str]:
    """Every topic a worker uses, created before it starts, as in production (the Kubernetes
    topic Job): a missing control topic would have the worker retry its listener meanwhile."""
    topics = [settings.request_topic, settings.result_topic, settings.dlq_topic]
    optional = (settings.priority_topic, settings.control_topic, settings.progress_topic)
    return topics + [t for t in optional if t]


def job(settings: Settings, size: int, seeds: tuple[int, ...], rid: str = "warm") -> GenerationJob:
    neg = settings.default_negative_prompt
    return GenerationJob(rid, PROMPT, neg, "standard", MODEL, size, size, 1, 0.0, seeds)


# --- a. raw pipeline ------------------------------------------------------------------------------


def pipe_call(pipe: Any, negative: str, size: int, batch: int, seed: int) -> None:
    generators = [torch.Generator("cpu").manual_seed(seed + i) for i in range(batch)]
    size_args = {"width": size, "height": size, "num_inference_steps": 1, "guidance_scale": 0.0}
    with torch.inference_mode():
        pipe([PROMPT] * batch, negative_prompt=[negative] * batch, generator=generators,
             output_type="pil", **size_args)  # fmt: skip


def raw_pipeline(settings: Settings, images: int) -> dict[str, float]:
    loader = PipelineLoader(settings.models_dir, choose_placement("cpu"), True, 1.0)
    pipe, negative, rates = loader(MODEL), settings.default_negative_prompt, {}
    for size in (256, 512):
        for batch in (1, 4):
            pipe_call(pipe, negative, size, batch, 0)  # warm-up
            calls, started = max(1, images // batch), time.perf_counter()
            for i in range(calls):
                pipe_call(pipe, negative, size, batch, i * batch)
            rates[f"{size}_b{batch}"] = calls * batch / (time.perf_counter() - started)
    return rates


# --- Kafka helpers --------------------------------------------------------------------------------


def request_bytes(
    request_id: str, size: int, seed: int, model: str = MODEL, image_format: str = "png"
) -> bytes:
    params = {"width": size, "height": size, "steps": 1, "cfg": 0.0, "seed": seed, "model": model}
    if image_format != "png":  # a version-1 request otherwise
        params["format"] = image_format
    return json.dumps({"request_id": request_id, "prompt": PROMPT, "params": params}).encode()


async def fill_backlog(settings: Settings, count: int, size: int) -> None:
    ids = [f"r-{i:05d}" for i in range(count)]
    await fill_topics(settings, [(r, request_bytes(r, size, i)) for i, r in enumerate(ids)])


async def fill_topics(settings: Settings, events: list[tuple[str, bytes]]) -> None:
    """Create the topics (one partition) and put (request_id, value) events on the request one."""
    await create_topics(settings.kafka_bootstrap_servers, worker_topics(settings), 1)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        sends = [
            await producer.send(settings.request_topic, value, request_id.encode())
            for request_id, value in events
        ]
        await asyncio.wait_for(asyncio.gather(*sends), 60)
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, count: int) -> dict[str, tuple[int, bytes]]:
    """key -> (timestamp ms, value) of the first `count` records of `topic` (30 s at most)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: dict[str, tuple[int, bytes]] = {}
    deadline = time.monotonic() + 30
    try:
        while len(found) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=300, max_records=5000)).values():
                found.update({r.key.decode(): (r.timestamp, r.value) for r in records})
    finally:
        await consumer.stop()
    return found


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else None


async def latencies(settings: Settings, count: int) -> dict[str, Any]:
    bootstrap = settings.kafka_bootstrap_servers
    requests = await read_topic(bootstrap, settings.request_topic, count)
    results = await read_topic(bootstrap, settings.result_topic, count)
    seconds = [(ts - requests[k][0]) / 1000 for k, (ts, _) in results.items() if k in requests]
    completed = sum(json.loads(v).get("status") == "completed" for _, v in results.values())
    p50, p95 = percentile(seconds, 0.5), percentile(seconds, 0.95)
    return {"results": len(results), "completed": completed, "p50_s": p50, "p95_s": p95}


async def until(condition: Callable[[], bool], timeout: float, tick: Callable[[], None]) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        tick()
        await asyncio.sleep(0.005)
    return True


# --- b, c, d. the worker --------------------------------------------------------------------------


async def run_worker(
    settings: Settings, engine: Engine, store: ImageStore, count: int, rss_at: int = 0
) -> dict[str, Any]:
    """Rate from partitions assigned to the last result acknowledged; RSS once `rss_at` done."""
    worker, out = Worker(settings, engine, store), dict[str, Any](rss_warm_mb=None)
    task = asyncio.create_task(worker.run())

    def tick() -> None:
        if rss_at and out["rss_warm_mb"] is None and worker.completed >= rss_at:
            out["rss_warm_mb"] = rss_mb()

    try:
        await until(lambda: worker.ready or task.done(), SECTION_TIMEOUT, tick)
        started = time.perf_counter()
        finished = await until(
            lambda: worker.completed >= count or task.done(), SECTION_TIMEOUT, tick
        )
        elapsed = time.perf_counter() - started
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 60)
    out |= {"done": worker.completed, "complete": finished, "seconds": elapsed}
    return out | {"rate": worker.completed / elapsed, **await latencies(settings, count)}


async def worker_backlog(stack: Stack, engine: Engine, scale: Scale) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for size in (512, 256):
        for label, batch, in_flight in (("batched", 4, 2), ("naive", 1, 1)):
            name = f"{label}{size}-{uuid.uuid4().hex[:6]}"
            limits = {"max_batch_size": batch, "max_batches_in_flight": in_flight}
            settings = make_settings(stack, name, **limits)
            await fill_backlog(settings, scale.requests, size)
            store = await asyncio.to_thread(build_store, settings)
            runs[f"{label}_{size}"] = await run_worker(settings, engine, store, scale.requests)
    return runs


async def raw_event_loop(settings: Settings, count: int, template: bytes) -> dict[str, Any]:
    """The floor: group consumer, one send_and_wait and one commit per event."""
    bootstrap = settings.kafka_bootstrap_servers
    consumer = AIOKafkaConsumer(settings.request_topic, bootstrap_servers=bootstrap,
                                group_id=settings.group_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=6000)  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await producer.start()
        await consumer.start()
        await until(lambda: bool(consumer.assignment()), SECTION_TIMEOUT, lambda: None)
        done, started, deadline = 0, time.perf_counter(), time.monotonic() + SECTION_TIMEOUT
        while done < count and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for r in records:
                    value = template.replace(b"r-00000", r.key)
                    await producer.send_and_wait(
                        settings.result_topic, value, r.key, headers=HEADERS
                    )
                    await consumer.commit({tp: r.offset + 1})
                    done += 1
        elapsed = time.perf_counter() - started
    finally:
        await consumer.stop()
        await producer.stop()
    out = {"done": done, "complete": done >= count, "seconds": elapsed, "rate": done / elapsed}
    return out | await latencies(settings, count)


def result_template(settings: Settings) -> bytes:
    """A result event of the size the event-path worker writes (request id r-00000)."""
    output = JobOutput(job(settings, 64, (0,), "r-00000"), [Image.new("RGB", (8, 8))], 0.0)
    result = store_output(output, [b""], MemoryStore(), settings.s3_key_prefix)
    return result.model_dump_json().encode()


async def event_path(stack: Stack, scale: Scale) -> dict[str, Any]:
    raw_settings = make_settings(stack, f"rawloop-{uuid.uuid4().hex[:6]}")
    await fill_backlog(raw_settings, scale.events, 64)
    raw = await raw_event_loop(raw_settings, scale.events, result_template(raw_settings))
    settings = make_settings(stack, f"events-{uuid.uuid4().hex[:6]}")
    await fill_backlog(settings, scale.events, 64)
    n, warm = scale.events, scale.warmup_events
    worker = await run_worker(settings, NullEngine(), MemoryStore(), n, warm)
    return {"raw_aiokafka": raw, "worker": worker | {"rss_end_mb": rss_mb()}}


# --- report ---------------------------------------------------------------------------------------


def targets(r: dict[str, Any]) -> list[tuple[str, float, str, float]]:
    raw, runs, ev = r["raw_pipeline"], r["worker_backlog"], r["event_path"]
    growth = (ev["worker"]["rss_end_mb"] or 0) - (ev["worker"]["rss_warm_mb"] or 0)
    b512, b256, n256 = (runs[k]["rate"] for k in ("batched_512", "batched_256", "naive_256"))
    return [
        ("worker/raw 512x512 (raw batch 4)", b512 / raw["512_b4"], ">=", 0.95),
        ("batched/naive 256x256", b256 / n256, ">=", 1.6),
        ("event path/raw aiokafka", ev["worker"]["rate"] / ev["raw_aiokafka"]["rate"], ">=", 0.7),
        ("RSS growth after warmup (MB)", growth, "<=", 50.0),
    ]


def fmt_run(name: str, run: dict[str, Any], unit: str) -> str:
    lat = f"p50 {run['p50_s'] or 0:.3f} s  p95 {run['p95_s'] or 0:.3f} s"
    ok = "" if run["complete"] and run["completed"] == run["done"] else "  INCOMPLETE/FAILED"
    return (
        f"  {name:<24}{run['rate']:9.2f} {unit}  {run['done']:5d} in {run['seconds']:7.2f} s"
        f"  ({run['completed']} completed)  latency {lat}{ok}"
    )


def render(r: dict[str, Any]) -> str:
    m, raw, runs, ev = r["machine"], r["raw_pipeline"], r["worker_backlog"], r["event_path"]
    b512, w = runs["batched_512"]["rate"], ev["worker"]
    lines = [
        f"machine: {m['nproc']} cpus, {m['cpu']}, torch {m['torch']}, {m['threads']} threads; "
        f"code {m['code']}",
        "a. raw pipeline, in-process (1 step, PIL output, no PNG, no upload)",
        *(f"  {k.replace('_b', 'px batch '):<24}{v:9.2f} img/s" for k, v in raw.items()),
        "b/c. worker on a pre-filled backlog (S3 store); e. latency = request ts -> result ts",
        "     (backlog latency includes the wait in the backlog and the ~3 s group join)",
        *(fmt_run(k, v, "img/s") for k, v in runs.items()),
        f"  worker/raw 512: vs raw batch 4 {b512 / raw['512_b4']:.2f}, "
        f"vs raw batch 1 {b512 / raw['512_b1']:.2f}",
        "d. event path (zero-cost engine, memory store) vs a raw aiokafka loop",
        *(fmt_run(k, v, "ev/s ") for k, v in ev.items()),
        f"f. RSS MB: start {r['rss_start_mb']:.1f}, after warmup {w['rss_warm_mb'] or 0:.1f}, "
        f"after the backlog {w['rss_end_mb']:.1f}",
        "targets",
    ]
    for name, value, op, goal in targets(r):
        ok = value >= goal if op == ">=" else value <= goal
        lines.append(f"  {name:<34}{value:8.2f}  target {op} {goal:<5}  {'PASS' if ok else 'MISS'}")
    return "\n".join(lines)


@contextlib.contextmanager
def start_stack(root: Path) -> Iterator[Stack]:
    """Tansu and SeaweedFS (with a generated key pair) under `root`, stopped at the end."""
    key, secret = f"bench{secrets.token_hex(4)}", secrets.token_hex(20)
    with (
        TansuBroker(root / "tansu") as broker,
        SeaweedS3(root / "s3", bucket="bench", access_key=key, secret_key=secret) as s3,
    ):
        yield Stack(broker.bootstrap_servers, s3, root / "data")


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    git = ["git", "-C", str(Path(__file__).parent), "describe", "--always", "--dirty"]
    code = subprocess.run(git, capture_output=True, text=True, timeout=10, check=False).stdout
    threads = torch.get_num_threads()
    return {"nproc": os.cpu_count(), "cpu": cpu, "torch": torch.__version__, "threads": threads,
            "code": code.strip() or "unknown"}  # fmt: skip


def run(stack: Stack, scale: Scale) -> dict[str, Any]:
    settings = make_settings(stack, "warm")
    engine = DiffusersEngine(settings.engine_config())  # sets torch threads
    for size in (512, 256):  # model load and warm-up before any clock starts
        engine.generate([job(settings, size, (1, 2, 3, 4))], 0)
        engine.generate([job(settings, size, (5,))], 0)
    report: dict[str, Any] = {"machine": machine(), "rss_start_mb": rss_mb()}
    report["raw_pipeline"] = raw_pipeline(settings, scale.raw_images)
    report["worker_backlog"] = asyncio.run(worker_backlog(stack, engine, scale))
    report["event_path"] = asyncio.run(event_path(stack, scale))
    return report


def event_path_rounds(stack: Stack, scale: Scale, rounds: int) -> list[tuple[float, float]]:
    """(raw ev/s, worker ev/s) of each round, the raw loop first then the worker, on the same
    broker: a box's state (another tenant, the broker's own) moves both figures of a round."""
    pairs = []
    for number in range(1, rounds + 1):
        report = asyncio.run(event_path(stack, scale))
        raw, worker = report["raw_aiokafka"]["rate"], report["worker"]["rate"]
        print(f"round {number}: raw aiokafka {raw:7.0f} ev/s  worker {worker:7.0f} ev/s"
              f"  ratio {worker / raw:.2f}", flush=True)  # fmt: skip
        pairs.append((raw, worker))
    return pairs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="16 requests, 300 events")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument(
        "--event-path", type=int, metavar="ROUNDS", help="only the event path, ROUNDS times"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        root = Path(tmp)
        handler = logging.FileHandler(root / "worker.log")  # INFO lines, as in production
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)
        for noisy in ("aiokafka", "botocore", "urllib3", "diffusers", "transformers"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        with start_stack(root) as stack:
            if args.event_path:
                pairs = event_path_rounds(stack, QUICK if args.quick else FULL, args.event_path)
                ratios = sorted(worker / raw for raw, worker in pairs)
                print(f"event path/raw aiokafka: median {statistics.median(ratios):.2f}"
                      f" (min {ratios[0]:.2f}, max {ratios[-1]:.2f}), target >= 0.7")  # fmt: skip
                return
            report = run(stack, QUICK if args.quick else FULL)
    fields = ("name", "value", "op", "goal")
    report["targets"] = [dict(zip(fields, t, strict=True)) for t in targets(report)]
    print(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
