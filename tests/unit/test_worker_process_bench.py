"""benchmarks/worker_process.py's arithmetic, on made-up results and log lines: the timed window,
the engine calls rebuilt from "request finished" lines, the split of the engine's idle time, and
the store calls placed in their stages. (The benchmark itself needs the real services: it is run by
hand, BENCHMARKS.md.)"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks.latency_proxy import Call as ProxyCall
from benchmarks.worker_process import (
    WARMUP_BATCHES,
    Cell,
    Result,
    _request_of,
    engine_calls,
    engine_waits,
    request_points,
    store_path,
    timed_window,
)

T0 = 1_800_000_000.0
STEP = 0.100


def line(request_id: str, points: dict[str, float], duration: float) -> dict[str, Any]:
    """A "request finished" line whose stages lead through `points` (time.time() seconds)."""
    order = ("taken", "checked", "slot", "submitted", "generated", "stored", "published")
    names = ("preflight", "queued", "record", "generate", "store", "publish")
    stages = {
        name: round((points[end] - points[begin]) * 1000, 1)
        for name, begin, end in zip(names, order, order[1:], strict=False)
    }
    return {
        "ts": points["published"],
        "msg": "request finished",
        "request_id": request_id,
        "duration_sec": duration,
        "stages_ms": stages,
    }


def backlog_lines(calls: int, gap: float, record_wait: float) -> list[dict[str, Any]]:
    """Calls of 4 requests, each STEP long, `gap` apart; each batch's markers are on record
    `record_wait` after the call before it ended, and the engine starts it at the gap's end."""
    lines = []
    for k in range(calls):
        start = T0 + k * (STEP + gap)
        previous_end = start - gap
        submitted = previous_end + record_wait if k else start
        for i in range(4):
            points = {
                "taken": start - 1.0,
                "checked": start - 0.9,
                "slot": previous_end - 0.03 if k else start - 0.05,
                "submitted": submitted,
                "generated": start + STEP,
                "stored": start + STEP + 0.05 + i * 0.001,
                "published": start + STEP + 0.06 + i * 0.001,
            }
            lines.append(line(f"r-{4 * k + i:05d}", points, STEP))
    return lines


def test_line_points_are_read_back_from_the_stages() -> None:
    (first, *_) = backlog_lines(1, 0.0, 0.0)
    points = request_points(first)
    assert points["generated"] == pytest.approx(T0 + STEP, abs=1e-3)
    assert points["submitted"] == pytest.approx(T0, abs=1e-3)
    assert points["taken"] == pytest.approx(T0 - 1.0, abs=1e-3)


def test_the_window_runs_from_the_last_result_of_the_warm_up_to_the_last_result() -> None:
    # 6 batches of 4, a batch every 0.1 s, its results 1 ms apart
    results = [Result(T0 + b * 0.1 + i * 0.001, "completed") for b in range(6) for i in range(4)]
    images, seconds = timed_window(results, 4)
    assert images == (6 - WARMUP_BATCHES - 1) * 4  # the batches after the warm-up's last one
    assert seconds == pytest.approx((6 - WARMUP_BATCHES - 1) * 0.1)


def test_engine_calls_are_rebuilt_one_per_batch() -> None:
    calls = engine_calls(backlog_lines(5, 0.02, 0.015))
    assert len(calls) == 5
    assert [round((c.end - c.start) * 1000) for c in calls] == [100] * 5
    assert round((calls[1].start - calls[0].end) * 1000) == 20


def test_the_engines_idle_time_is_split_by_what_the_next_batch_was_doing() -> None:
    cell = Cell(step_ms=100, batch=4, store_ms=20, requests=24)
    waits = engine_waits(backlog_lines(6, 0.02, 0.015), cell)
    assert waits["calls"] == 6 - WARMUP_BATCHES
    assert waits["requests_per_call"] == {4: 6 - WARMUP_BATCHES}
    assert waits["gap_ms_p50"] == pytest.approx(20, abs=0.5)
    by_wait = waits["idle_ms_per_call_by_wait"]
    assert by_wait["record"] == pytest.approx(15, abs=0.5)  # its markers still being written
    assert by_wait["hand-off"] == pytest.approx(5, abs=0.5)
    assert by_wait["queued"] == pytest.approx(0, abs=0.5)  # it had its slot before the gap
    # from the first call's start to the last one's end: 4 calls and the 3 gaps between them
    assert waits["busy_share"] == pytest.approx(400 / 460, abs=0.01)


def test_store_calls_are_placed_in_the_stages_of_their_requests() -> None:
    lines = backlog_lines(1, 0.0, 0.0)
    slot = request_points(lines[0])["slot"]
    marker = ProxyCall(
        "PUT", "marker", "/bench/p/r-00000/_attempt-1-ab", slot + 0.030, slot + 0.052
    )
    listing = ProxyCall("GET", "listing", "/bench?list-type=2&prefix=p%2Fr-00001%2F", 0.0, 0.0)
    assert _request_of(marker) == "r-00000"
    assert _request_of(listing) == "r-00001"
    placed = store_path(lines, [marker])
    assert list(placed) == ["record"]
    assert placed["record"]["calls"] == 1
    assert placed["record"]["to_the_line_ms"] == pytest.approx(30, abs=0.5)
    assert placed["record"]["call_ms"] == pytest.approx(22, abs=0.5)
