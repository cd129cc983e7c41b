"""The real worker process on the simulated engine, its store behind a latency line: the worker's
share of the engine's rate, store calls per image, and where the engine waits.

`python -m benchmarks.worker_process [--step-ms 100] [--batch 4] [--requests N] [--store-ms 20]`,
`--sweep` for the grid of step times x store latencies (BENCHMARKS.md, "GPU host").

Starts the embedded Tansu (Kafka API) and SeaweedFS (`weed mini`, S3 API) on 127.0.0.1, and
`benchmarks/latency_proxy.py` in front of SeaweedFS: every store request the worker sends is held
`--store-ms` before it goes on, as a round trip to S3 would hold it, and counted by method and by
what it touches (image, attempt marker, listing). A backlog of 64x64 one-step requests for the
default model goes on a fresh request topic (one partition), then `python -m consumer run` starts
as a subprocess with ENGINE=simulated (each engine call sleeps SIMULATED_STEP_MS per step, off the
GIL, for its whole batch), SIMULATED_STEP_MS=--step-ms and MAX_BATCH_SIZE=--batch, its S3 endpoint
the proxy. Results are read from the result topic.

The rate is timed on the results' own timestamps, from the last result of batch WARMUP_BATCHES + 1
to the last result, and counts the images of the batches finished in between (process start, the
group join and the first batches are not counted). The engine's rate is --batch images per
step time. Where the engine waits comes from the worker's "request finished" log lines: each
carries its stages (preflight, queued, record, generate, store, publish, in ms), its engine call's
own duration and the time it was written (just after its publish), from which the engine calls'
start and end are rebuilt, and each gap between two calls is split by the stage that the next
batch was in meanwhile. A benchmark, not a test: it asserts nothing, it prints what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import psutil  # type: ignore[import-untyped]
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from benchmarks.latency_proxy import Call as ProxyCall
from benchmarks.latency_proxy import LatencyProxy
from consumer.devtools.processes import free_port
from consumer.devtools.services import SeaweedS3, TansuBroker, create_topics
from consumer.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
# The checkout whose `python -m consumer` runs (--trees: another commit's, side by side).
WORKER_TREE = ROOT
PROMPT = "a lighthouse on a cliff at dusk, oil painting"
SIZE = 64
# Batches whose results are left out of the timed window (start-up, the first lookups).
WARMUP_BATCHES = 2
# A worker gets this long to start and answer its first request, on top of the backlog's time.
START_ALLOWANCE_S = 90.0
# The backlog's time budget: this many times what the engine alone would take, at least.
SLACK = 20.0
STOP_GRACE_S = 30.0
SWEEP_STEPS_MS = (25.0, 50.0, 100.0, 200.0)
SWEEP_STORE_MS = (5.0, 20.0, 50.0)
# Per sweep cell: this many seconds of the engine's own rate, within [SWEEP_MIN, SWEEP_MAX].
SWEEP_SECONDS, SWEEP_MIN, SWEEP_MAX = 4.0, 60, 240
STAGES = ("preflight", "queued", "record", "generate", "store", "publish")
# What the next batch was doing while the engine waited (see engine_waits).
WAITS = ("intake", "preflight", "queued", "record", "hand-off")


@dataclass(frozen=True)
class Cell:
    step_ms: float
    batch: int
    store_ms: float
    requests: int
    in_flight: int | None = None  # MAX_BATCHES_IN_FLIGHT; None: the worker's default
    io_threads: int | None = None  # IO_THREADS; None: the worker's default
    extra: tuple[tuple[str, str], ...] = ()  # further settings (--set NAME=VALUE)

    @property
    def engine_rate(self) -> float:
        """Images per second of the engine alone: a batch per step (one-step requests)."""
        return self.batch / (self.step_ms / 1000)

    def label(self) -> str:
        knobs = [f"step {self.step_ms:g} ms", f"batch {self.batch}", f"store {self.store_ms:g} ms"]
        if self.in_flight is not None:
            knobs.append(f"in flight {self.in_flight}")
        if self.io_threads is not None:
            knobs.append(f"io threads {self.io_threads}")
        knobs += [f"{name}={value}" for name, value in self.extra]
        return ", ".join(knobs)


@dataclass(frozen=True)
class Services:
    broker: TansuBroker
    s3: SeaweedS3
    data_dir: Path


@dataclass(frozen=True)
class Result:
    timestamp: float  # the result record's timestamp (the worker's producer), s
    status: str


@dataclass
class Run:
    cell: Cell
    results: int = 0
    completed: int = 0
    images: int = 0  # finished in the timed window
    window_s: float = 0.0
    launch_to_last_s: float = 0.0
    rate: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)  # in the timed window, per process
    store_calls: dict[str, Any] = field(default_factory=dict)
    stages_p50_ms: dict[str, float] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)
    store_path: dict[str, dict[str, float]] = field(default_factory=dict)
    load: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at the start and the end
    problem: str | None = None

    @property
    def share(self) -> float:
        return self.rate / self.cell.engine_rate


# --- services and the worker process ---------------------------------------------------------


@contextlib.contextmanager
def services(root: Path) -> Iterator[Services]:
    """Tansu and SeaweedFS (with a generated key pair) under `root`, stopped at the end."""
    key, secret = f"bench{secrets.token_hex(4)}", secrets.token_hex(20)
    with (
        TansuBroker(root / "tansu") as broker,
        SeaweedS3(root / "s3", bucket="bench", access_key=key, secret_key=secret) as s3,
    ):
        yield Services(broker, s3, root / "data")


def worker_settings(stack: Services, cell: Cell, endpoint_url: str, name: str) -> Settings:
    s3 = stack.s3
    values: dict[str, Any] = {
        "data_dir": stack.data_dir,
        "engine": "simulated",
        "simulated_step_ms": cell.step_ms,
        "simulated_load_ms": 0.0,
        "max_batch_size": cell.batch,
        "hf_hub_offline": True,
        "app_port": free_port(),
        "kafka_bootstrap_servers": stack.broker.bootstrap_servers,
        "kafka_session_timeout_ms": 6000,
        "kafka_enable_idempotence": False,  # Tansu has no InitProducerId
        "kafka_fetch_max_wait_ms": 10,  # as `stack up` writes it (Tansu)
        "request_topic": f"{name}.requests",
        "result_topic": f"{name}.results",
        "dlq_topic": f"{name}.dlq",
        "control_topic": f"{name}.control",
        "progress_topic": f"{name}.progress",
        "group_id": f"{name}.g",
        "s3_endpoint_url": endpoint_url,
        "s3_bucket": s3.bucket,
        "s3_key_prefix": name,
        "aws_access_key_id": s3.access_key,
        "aws_secret_access_key": s3.secret_key,
    }
    if cell.in_flight is not None:
        values["max_batches_in_flight"] = cell.in_flight
    if cell.io_threads is not None:
        values["io_threads"] = cell.io_threads
    values |= {name.lower(): value for name, value in cell.extra}
    return Settings(_env_file=None, **values)


def topics(settings: Settings) -> list[str]:
    names = [settings.request_topic, settings.result_topic, settings.dlq_topic]
    return names + [t for t in (settings.control_topic, settings.progress_topic) if t]


def request_bytes(request_id: str, seed: int) -> bytes:
    params = {"width": SIZE, "height": SIZE, "steps": 1, "cfg": 0.0, "seed": seed}
    return json.dumps({"request_id": request_id, "prompt": PROMPT, "params": params}).encode()


async def fill_backlog(settings: Settings, count: int) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    await create_topics(bootstrap, topics(settings), 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        sends = []
        for i in range(count):
            request_id = f"r-{i:05d}"
            value = request_bytes(request_id, i)
            sends.append(await producer.send(settings.request_topic, value, request_id.encode()))
        await asyncio.wait_for(asyncio.gather(*sends), 60)
    finally:
        await producer.stop()


def worker_environment(settings: Settings) -> dict[str, str]:
    """Ours, less anything a worker would read as a setting (or AWS's own), plus the settings."""
    own = settings.to_env()
    env = {k: v for k, v in os.environ.items() if k not in own and not k.startswith("AWS_")}
    path = [str(WORKER_TREE), *filter(None, [os.environ.get("PYTHONPATH")])]
    return env | own | {"HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(path)}


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "consumer", "--env-file", "/nonexistent", "run"],
            cwd=WORKER_TREE,
            env=worker_environment(settings),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_worker(proc: subprocess.Popen[bytes], grace: float = STOP_GRACE_S) -> None:
    """SIGTERM (the worker drains), then SIGKILL after `grace` s. Safe on an exited process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- CPU time ----------------------------------------------------------------------------------


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """User + system CPU seconds of each process so far (threads included, children not)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        if pid is None:
            continue
        with contextlib.suppress(psutil.Error):
            process = psutil.Process(pid)
            times = process.cpu_times()
            out[name] = float(times.user + times.system)
            if name == "worker":  # its event loop (the main thread) apart from its threads
                main = [t for t in process.threads() if t.id == pid]
                if main:
                    out["worker event loop"] = float(main[0].user_time + main[0].system_time)
                    out["worker threads"] = out[name] - out["worker event loop"]
    return out


# --- one run ----------------------------------------------------------------------------------


async def collect(
    settings: Settings,
    count: int,
    proc: subprocess.Popen[bytes],
    timeout: float,
    sample_at: int,
    pids: dict[str, int | None],
) -> tuple[dict[str, Result], dict[str, float]]:
    """The result topic's records, by key, until `count` arrived, the worker exited or
    `timeout` s passed; CPU seconds of `pids` when the `sample_at`-th result arrived."""
    consumer = AIOKafkaConsumer(
        settings.result_topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    found: dict[str, Result] = {}
    sampled: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    await consumer.start()
    try:
        while len(found) < count and time.monotonic() < deadline and proc.poll() is None:
            batches = await consumer.getmany(timeout_ms=100, max_records=1000)
            for record in (r for rs in batches.values() for r in rs):
                status = str(json.loads(record.value).get("status"))
                found[record.key.decode()] = Result(record.timestamp / 1000, status)
            if not sampled and len(found) >= sample_at:
                sampled = cpu_seconds(pids)
    finally:
        await consumer.stop()
    return found, sampled


def timed_window(results: Sequence[Result], batch: int) -> tuple[int, float]:
    """(images, seconds) from the last result of batch WARMUP_BATCHES + 1 to the last result.

    Results come a batch at a time, so both ends are a batch's last result: the images in
    between are exactly those of the batches after that one (backlog requests are of one
    image each; a batch of `batch` requests)."""
    stamps = sorted(r.timestamp for r in results)
    first = min(WARMUP_BATCHES * batch + batch - 1, len(stamps) - 1)
    last = len(stamps) - 1
    return last - first, stamps[last] - stamps[first] if last > first else 0.0


async def run_cell(stack: Services, proxy: LatencyProxy, cell: Cell, workdir: Path) -> Run:
    name = f"wp-{uuid.uuid4().hex[:6]}"
    settings = worker_settings(stack, cell, proxy.endpoint_url, name)
    await fill_backlog(settings, cell.requests)
    proxy.delay = cell.store_ms / 1000
    proxy.stats.reset()
    log = workdir / f"{name}.log"
    run = Run(cell)
    first = WARMUP_BATCHES * cell.batch + cell.batch  # results that close the warm-up
    budget = START_ALLOWANCE_S + SLACK * cell.requests / cell.engine_rate
    load_start = os.getloadavg()[0]
    launched = time.time()
    proc = start_worker(settings, log)
    pids = {
        "worker": proc.pid,
        "broker": stack.broker.pid,
        "store": stack.s3.pid,
        "benchmark (proxy, reader)": os.getpid(),
    }
    try:
        found, cpu_start = await collect(settings, cell.requests, proc, budget, first, pids)
        cpu_end = cpu_seconds(pids)
    finally:
        await asyncio.to_thread(stop_worker, proc)
    results = list(found.values())
    run.results = len(results)
    run.completed = sum(r.status == "completed" for r in results)
    if run.results < cell.requests or run.completed < run.results:
        run.problem = f"{run.completed} completed of {run.results} results, {cell.requests} sent"
        run.problem += f" (worker exit code {proc.returncode}; log {log})"
    if results:
        run.images, run.window_s = timed_window(results, cell.batch)
        run.rate = run.images / run.window_s if run.window_s > 0 else 0.0
        run.launch_to_last_s = max(r.timestamp for r in results) - launched
    run.cpu_s = {k: cpu_end[k] - cpu_start[k] for k in cpu_end if k in cpu_start}
    run.store_calls = store_calls(proxy, run.results)
    run.load = (load_start, os.getloadavg()[0])
    lines = finished_lines(log)
    try:
        run.stages_p50_ms = {
            stage: statistics.median(float(line["stages_ms"][stage]) for line in lines)
            for stage in STAGES
            if lines
        }
        run.engine = engine_waits(lines, cell)
        run.store_path = store_path(lines, proxy.stats.calls)
    except (KeyError, TypeError, ValueError) as exc:  # a worker whose log line reads otherwise
        note = f"the log's stage timings were not understood ({exc!r}): no breakdown"
        run.problem = f"{run.problem}; {note}" if run.problem else note
    return run


def store_calls(proxy: LatencyProxy, images: int) -> dict[str, Any]:
    """Store calls by method and kind, and per image (the worker's start-up calls to the bucket
    itself left out of the per-image figure)."""
    stats = proxy.stats
    per_request = stats.total - stats.by_kind["bucket"]
    per = images or 1
    return {
        "total": stats.total,
        "per_image": per_request / per,
        "by_method": dict(stats.by_method),
        "by_kind": dict(stats.by_kind),
        "per_image_by_call": {k: v / per for k, v in sorted(stats.by_method_kind.items())},
        "connections": stats.connections,
        "unparsed_streams": stats.unparsed,
        "answer_ms_p50": _p50(
            [(c.answered - c.started) * 1000 for c in stats.calls if c.answered is not None]
        ),
    }


def _p50(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# --- where the engine waits --------------------------------------------------------------------


def finished_lines(log: Path) -> list[dict[str, Any]]:
    """The worker's "request finished" lines of completed requests that carry stage timings."""
    lines = []
    for text in log.read_text(errors="replace").splitlines():
        if '"request finished"' not in text:
            continue
        with contextlib.suppress(ValueError):
            line = json.loads(text)
            if isinstance(line, dict) and "stages_ms" in line and line.get("duration_sec"):
                lines.append(line)
    return lines


@dataclass
class Call:
    """One engine call, rebuilt from its requests' lines (time.time() seconds)."""

    start: float
    end: float
    taken: float  # the last of its requests returned by a poll
    checked: float  # the last of its requests' lookups done
    slot: float  # a batch slot took it
    submitted: float  # its attempts on record: handed to the engine thread


def engine_calls(lines: list[dict[str, Any]]) -> list[Call]:
    """Each line's points, from the line's time (just after its publish) back through its
    stages; the requests of one engine call share its end (the `generated` point)."""
    by_end: dict[int, list[dict[str, float]]] = {}
    for line in lines:
        points = request_points(line)
        generated = points["generated"]
        point = {
            "end": generated,
            "start": generated - float(line["duration_sec"]),
            "submitted": points["submitted"],
            "slot": points["slot"],
            "checked": points["checked"],
            "taken": points["taken"],
        }
        by_end.setdefault(round(generated * 200), []).append(point)  # 5 ms buckets
    merged: list[list[dict[str, float]]] = []
    for key in sorted(by_end):  # neighbouring buckets of one call (rounding) join
        if merged and key - merged[-1][-1]["bucket"] <= 1:
            merged[-1] += [p | {"bucket": key} for p in by_end[key]]
        else:
            merged.append([p | {"bucket": key} for p in by_end[key]])
    return [
        Call(
            start=statistics.median(p["start"] for p in group),
            end=statistics.median(p["end"] for p in group),
            taken=max(p["taken"] for p in group),
            checked=max(p["checked"] for p in group),
            slot=statistics.median(p["slot"] for p in group),
            submitted=statistics.median(p["submitted"] for p in group),
        )
        for group in merged
    ]


def engine_waits(lines: list[dict[str, Any]], cell: Cell) -> dict[str, Any]:
    """The engine's idle time between calls after the warm-up, and what the next batch was
    doing meanwhile: intake (not polled yet), preflight (its lookups: listing, marker),
    queued (waiting for a batch slot: all slots held by batches still generating, storing or
    publishing), record (its attempt markers written after it took a slot) or hand-off (handed
    to the engine thread, not started yet)."""
    calls = engine_calls(lines)[WARMUP_BATCHES:]
    if len(calls) < 2:
        return {}
    waits: dict[str, float] = dict.fromkeys(WAITS, 0.0)
    gaps = []
    for before, after in itertools.pairwise(calls):
        gap_start, gap_end = before.end, after.start
        gaps.append(max(0.0, gap_end - gap_start))
        bounds = [float("-inf"), after.taken, after.checked, after.slot, after.submitted, gap_end]
        for name, lo, hi in zip(WAITS, bounds, bounds[1:], strict=False):
            waits[name] += max(0.0, min(hi, gap_end) - max(lo, gap_start))
    span = calls[-1].end - calls[0].start
    busy = sum(c.end - c.start for c in calls)
    sizes = Counter(
        sum(1 for line in lines if _same_call(line, c)) for c in calls
    )  # requests per call
    return {
        "calls": len(calls),
        "busy_share": busy / span if span > 0 else 0.0,
        "call_ms_p50": statistics.median((c.end - c.start) * 1000 for c in calls),
        "gap_ms_p50": statistics.median(g * 1000 for g in gaps),
        "gap_ms_mean": statistics.mean(g * 1000 for g in gaps),
        "gap_ms_max": max(g * 1000 for g in gaps),
        "idle_ms_per_call_by_wait": {k: waits[k] * 1000 / len(gaps) for k in WAITS},
        "requests_per_call": dict(sorted(sizes.items())),
        "expected_batch": cell.batch,
    }


def _same_call(line: dict[str, Any], call: Call) -> bool:
    return abs(request_points(line)["generated"] - call.end) < 0.006


def request_points(line: dict[str, Any]) -> dict[str, float]:
    """A "request finished" line's points in time (time.time() s), back from the line's time
    (just after its publish) through its stages."""
    st = {k: float(v) / 1000 for k, v in line["stages_ms"].items()}
    published = float(line["ts"])
    stored = published - st["publish"]
    generated = stored - st["store"]
    submitted = generated - st["generate"]
    slot = submitted - st["record"]
    checked = slot - st["queued"]
    return {
        "taken": checked - st["preflight"],
        "checked": checked,
        "slot": slot,
        "submitted": submitted,
        "generated": generated,
        "stored": stored,
        "published": published,
    }


def _request_of(call: ProxyCall) -> str | None:
    """The request id a store call is about: `<bucket>/<prefix>/<request_id>/<name>`, or a
    listing of `prefix=<prefix>/<request_id>/`."""
    parts = urlsplit(call.target)
    if call.kind == "listing":
        prefix = parse_qs(parts.query).get("prefix", [""])[0]
        return prefix.rstrip("/").rpartition("/")[2] or None
    segments = unquote(parts.path).strip("/").split("/")
    return segments[-2] if len(segments) >= 3 else None


# (stage name, its start point, the store call it waits for (method, kind), its end point)
STORE_STEPS = (
    ("preflight", "taken", ("GET", "listing"), "checked"),
    ("record", "slot", ("PUT", "marker"), "submitted"),
    ("store", "generated", ("PUT", "image"), "stored"),
    ("after publish", "published", ("DELETE", "marker"), None),
)


def store_path(lines: list[dict[str, Any]], calls: list[ProxyCall]) -> dict[str, dict[str, float]]:
    """For each stage that makes a store call: p50 ms from the stage's start until the call
    reached the line (threads and botocore before it), the call itself (the line's delay and the
    store), and from its answer to the stage's end (back to the event loop, the request's other
    calls of the stage)."""
    by_request: dict[tuple[str, str, str], ProxyCall] = {}
    for call in calls:
        request_id = _request_of(call)
        if request_id is not None and call.answered is not None:
            by_request.setdefault((request_id, call.method, call.kind), call)
    out: dict[str, dict[str, float]] = {}
    for stage, begin, (method, kind), end in STORE_STEPS:
        before, during, after = [], [], []
        for line in lines:
            found = by_request.get((str(line["request_id"]), method, kind))
            if found is None or found.answered is None:
                continue
            points = request_points(line)
            before.append((found.started - points[begin]) * 1000)
            during.append((found.answered - found.started) * 1000)
            if end is not None:
                after.append((points[end] - found.answered) * 1000)
        if before:
            out[stage] = {
                "calls": len(before),
                "to_the_line_ms": statistics.median(before),
                "call_ms": statistics.median(during),
                "answer_to_stage_end_ms": statistics.median(after) if after else float("nan"),
            }
    return out


# --- report -----------------------------------------------------------------------------------


def render(run: Run) -> list[str]:
    c, sc = run.cell, run.store_calls
    lines = [
        f"{c.label()}: {c.requests} requests of {SIZE}x{SIZE}, 1 step (load average "
        f"{run.load[0]:.2f} at the start, {run.load[1]:.2f} at the end)"
    ]
    if run.problem:
        lines.append(f"  PROBLEM: {run.problem}")
    lines += [
        f"  timed: {run.images} images in {run.window_s:.2f} s (results' timestamps, from the "
        f"last result of batch {WARMUP_BATCHES + 1} to the last; launch to last result "
        f"{run.launch_to_last_s:.1f} s)",
        f"  worker {run.rate:7.1f} img/s   engine {c.engine_rate:7.1f} img/s   "
        f"share {run.share:.3f}",
        f"  store calls: {sc['total']} in all, {sc['per_image']:.2f} per image "
        f"(by method {sc['by_method']}; by kind {sc['by_kind']}); answer p50 "
        f"{sc['answer_ms_p50'] or 0:.1f} ms with the line's delay",
        "  per image: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sc["per_image_by_call"].items() if k != "bucket"),
        "  CPU s in the timed window: "
        + ", ".join(f"{k} {v:.2f}" for k, v in run.cpu_s.items())
        + (
            f" (worker {run.cpu_s['worker'] / run.images * 1000:.1f} ms per image)"
            if run.images and "worker" in run.cpu_s
            else ""
        ),
    ]
    if run.stages_p50_ms:
        lines.append(
            "  stages p50 ms: " + ", ".join(f"{k} {v:.1f}" for k, v in run.stages_p50_ms.items())
        )
    e = run.engine
    if e:
        lines += [
            f"  engine: {e['calls']} calls after warm-up, busy {e['busy_share']:.3f} of the span; "
            f"call p50 {e['call_ms_p50']:.1f} ms; gap p50 {e['gap_ms_p50']:.1f} ms, mean "
            f"{e['gap_ms_mean']:.1f}, max {e['gap_ms_max']:.1f}; requests per call "
            f"{e['requests_per_call']}",
            "  idle ms per gap while the next batch was in: "
            + ", ".join(f"{k} {v:.1f}" for k, v in e["idle_ms_per_call_by_wait"].items()),
        ]
    if run.store_path:
        lines.append(
            "  store calls in their stages, p50 ms (stage start -> call on the line / the call / "
            "its answer -> stage end): "
            + "; ".join(
                f"{stage} {v['to_the_line_ms']:.1f} / {v['call_ms']:.1f} / "
                f"{v['answer_to_stage_end_ms']:.1f}"
                for stage, v in run.store_path.items()
            )
        )
    return lines


def sweep_table(runs: list[Run]) -> list[str]:
    stores = sorted({r.cell.store_ms for r in runs})
    lines = [
        "| step ms (engine img/s) | " + " | ".join(f"store {s:g} ms" for s in stores) + " |",
        "|---|" + "---|" * len(stores),
    ]
    for step in sorted({r.cell.step_ms for r in runs}):
        cells = []
        for store in stores:
            match = [r for r in runs if r.cell.step_ms == step and r.cell.store_ms == store]
            cells.append(
                " / ".join(f"{r.share:.2f} ({r.rate:.0f})" for r in match) if match else "-"
            )
        rate = runs[0].cell.batch / (step / 1000)
        lines.append(f"| {step:g} ({rate:.0f}) | " + " | ".join(cells) + " |")
    return lines


def sweep_cells(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for step in SWEEP_STEPS_MS:
        rate = args.batch / (step / 1000)
        count = int(min(SWEEP_MAX, max(SWEEP_MIN, rate * SWEEP_SECONDS)))
        count -= count % args.batch
        for store in SWEEP_STORE_MS:
            cells.append(
                Cell(step, args.batch, store, count, args.in_flight, args.io_threads, args.set)
            )
    return cells


def knob_cells(args: argparse.Namespace) -> list[Cell]:
    cells = []
    for in_flight in args.knob_in_flight:
        for io in args.knob_io_threads:
            cells.append(
                Cell(
                    args.step_ms, args.batch, args.store_ms, args.requests, in_flight, io, args.set
                )
            )
    return cells


async def run_all(stack: Services, cells: list[Cell], workdir: Path) -> list[Run]:
    runs = []
    async with LatencyProxy("127.0.0.1", stack.s3.port, 0.0) as proxy:
        for cell in cells:
            run = await run_cell(stack, proxy, cell, workdir)
            runs.append(run)
            print("\n".join(render(run)), flush=True)
    return runs


def _cpu_line(run: Run) -> str:
    return ", ".join(f"{name} {seconds:.2f}" for name, seconds in run.cpu_s.items())


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name.strip().upper(), value


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--step-ms", type=float, default=100.0, help="SIMULATED_STEP_MS")
    parser.add_argument("--batch", type=int, default=4, help="MAX_BATCH_SIZE")
    parser.add_argument("--requests", type=int, default=400, help="the backlog")
    parser.add_argument("--store-ms", type=float, default=20.0, help="added per store request")
    parser.add_argument("--in-flight", type=int, default=None, help="MAX_BATCHES_IN_FLIGHT")
    parser.add_argument("--io-threads", type=int, default=None, help="IO_THREADS")
    parser.add_argument("--sweep", action="store_true", help="step 25-200 ms x store 5-50 ms")
    parser.add_argument(
        "--knob-in-flight", type=_ints, default=None, help="e.g. 1,2,3: one run each"
    )
    parser.add_argument("--knob-io-threads", type=_ints, default=None, help="e.g. 2,4,8")
    parser.add_argument(
        "--set",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a further worker setting, e.g. MAX_ATTEMPTS=0 (repeatable)",
    )
    parser.add_argument(
        "--trees",
        type=lambda text: [Path(p).resolve() for p in text.split(",")],
        default=None,
        metavar="DIR,DIR",
        help="run the worker of each checkout in turn, twice, on the same services (e.g. an "
        "older commit's `git worktree` beside this one; with --set ENGINE=diffusers)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the runs here")
    parser.add_argument("--keep", action="store_true", help="keep the logs (prints the folder)")
    args = parser.parse_args(argv)
    args.set = tuple(args.set)
    if args.sweep:
        cells = sweep_cells(args)
    elif args.knob_in_flight or args.knob_io_threads:
        args.knob_in_flight = args.knob_in_flight or [args.in_flight]
        args.knob_io_threads = args.knob_io_threads or [args.io_threads]
        cells = knob_cells(args)
    else:
        cells = [
            Cell(
                args.step_ms,
                args.batch,
                args.store_ms,
                args.requests,
                args.in_flight,
                args.io_threads,
                args.set,
            )
        ]
    # SIGTERM unwinds like Ctrl-C: the worker process and the services are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="bench-worker-process-"))
    try:
        with services(workdir) as stack:
            runs = asyncio.run(run_all(stack, cells, workdir)) if not args.trees else []
            for tree in [*(args.trees or []), *reversed(args.trees or [])]:  # A B B A
                global WORKER_TREE
                WORKER_TREE = tree
                done = asyncio.run(run_all(stack, cells, workdir))
                rates = ", ".join(
                    f"{run.rate:.1f} img/s, CPU s in the window {_cpu_line(run)} "
                    f"({run.problem or 'ok'})"
                    for run in done
                )
                print(f"tree {tree}: {rates}", flush=True)
                runs += done
    except KeyboardInterrupt:
        print("interrupted: the worker process and the services are stopped", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if len(runs) > 1:
        print("\nshare of the engine's rate (worker img/s):")
        print("\n".join(sweep_table(runs)))
    if args.json:
        payload = [asdict(r) | {"share": r.share, "engine_rate": r.cell.engine_rate} for r in runs]
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
