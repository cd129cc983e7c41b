"""Where an idle worker's overhead goes, from the worker's own "request finished" log lines.

Each line carries `stages_ms` (consumer/batches.Stages: preflight, queued, record, generate,
store, publish) and `latency_sec` (the request record's timestamp to the line, written once the
result is published). With the client's end-to-end time and the pipeline's own time
(`duration_sec`) per request, the overhead splits into:

- intake: request sent -> the worker's poll returned it (producer acknowledgement, fetch wait);
- preflight, queued, record: before the engine call (store lookups, attempt marker);
- hand-offs: the engine stage less the pipeline's own time (threads, the pipeline's wrapper);
- store: encoding and upload; publish: result acknowledged and offset committed;
- result fetch: the result published -> the client's poll returned it.

Wall clocks of one machine (the record timestamp is the client's): fine on 127.0.0.1.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, NamedTuple

COLUMNS = (
    "intake",
    "preflight",
    "queued",
    "record",
    "hand-offs",
    "store",
    "publish",
    "result fetch",
)


class Trip(NamedTuple):
    elapsed_s: float  # the client's send -> result
    pipeline_s: float  # the worker's own pipeline call (audit.duration_sec)
    request_id: str


def finished_lines(log: Path) -> dict[str, dict[str, Any]]:
    """The "request finished" lines of a worker log that carry stage timings, by request_id (a
    worker older than them gives none: no breakdown, the rest of the report stands)."""
    lines: dict[str, dict[str, Any]] = {}
    for text in log.read_text(errors="replace").splitlines():
        if '"request finished"' not in text:
            continue
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and "stages_ms" in line and "latency_sec" in line:
            lines[str(line.get("request_id"))] = line
    return lines


def breakdown(trips: list[Trip], log: Path) -> dict[str, float]:
    """Median milliseconds of each column over the trips found in the log."""
    lines = finished_lines(log)
    rows = [_split(trip, lines[trip.request_id]) for trip in trips if trip.request_id in lines]
    if not rows:
        return {}
    return {name: statistics.median(row[name] for row in rows) for name in COLUMNS}


def _split(trip: Trip, line: dict[str, Any]) -> dict[str, float]:
    stages = {str(name): float(ms) for name, ms in line["stages_ms"].items()}
    worker_ms = float(line["latency_sec"]) * 1000
    elapsed_ms, pipeline_ms = trip.elapsed_s * 1000, trip.pipeline_s * 1000
    return {
        "intake": worker_ms - sum(stages.values()),
        "preflight": stages["preflight"],
        "queued": stages["queued"],
        "record": stages["record"],
        "hand-offs": stages["generate"] - pipeline_ms,
        "store": stages["store"],
        "publish": stages["publish"],
        "result fetch": elapsed_ms - worker_ms,
    }


def render(rows: dict[str, dict[str, float]]) -> list[str]:
    """A markdown table: one row per size and format, one column per part of the overhead."""
    lines = [
        "| size, format | " + " | ".join(COLUMNS) + " | sum |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name, parts in rows.items():
        if parts:
            cells = " | ".join(f"{parts[column]:.1f}" for column in COLUMNS)
            lines.append(f"| {name} | {cells} | {sum(parts.values()):.1f} |")
    return lines
