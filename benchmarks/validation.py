"""Wall time of `parse_request` on hostile events, next to pydantic alone on the same bytes.

    python -m benchmarks.validation [--repeat 5] [--old-ref GIT_REF]

Columns: `json.loads` alone (the floor); the baseline, what parse_request used to do:
`json.loads` and `GenerationRequest.model_validate` on the whole payload, unknown keys included;
"+ errors()", the baseline plus the list of error dicts pydantic builds for those keys, which
the old error mapping then turned into one violation each; parse_request now; with --old-ref,
parse_request as it was at that commit (its `schemas` package, in a child process). A
benchmark, not a test: it prints figures only (median of --repeat runs, milliseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydantic import ValidationError

from schemas import GenerationRequest, RequestLimits, parse_request

LIMITS = RequestLimits()
MAX_EVENT_BYTES = 1024 * 1024  # the default limit: the largest event parse_request still parses
PARAMS: dict[str, object] = {"width": 512, "seed": 1}
BASE: dict[str, object] = {"request_id": "bench-1", "prompt": "a corgi", "params": PARAMS}


def _packed(max_bytes: int) -> bytes:
    """As many short unknown keys as fit in `max_bytes`."""
    head, tail = b'{"request_id": "bench-1", "prompt": "a corgi"', b"}"
    room = max_bytes - len(head) - len(tail)
    keys: list[bytes] = []
    size = 0
    while True:
        key = f',"k{len(keys):x}":0'.encode()
        if size + len(key) > room:
            return head + b"".join(keys) + tail
        keys.append(key)
        size += len(key)


def events() -> dict[str, bytes]:
    many = {f"unknown_{i}": i for i in range(40_000)}
    params = {**PARAMS, **many}
    return {
        "normal event": json.dumps(BASE).encode(),
        "40,000 unknown keys": json.dumps({**BASE, **many}).encode(),
        "40,000 unknown keys in params": json.dumps({**BASE, "params": params}).encode(),
        "1 MiB of unknown keys": _packed(MAX_EVENT_BYTES),
        # Far over MAX_EVENT_BYTES: refused by its size alone, before decoding.
        "500,000 unknown keys": json.dumps(
            {**BASE, **{f"k{i}": 0 for i in range(500_000)}}
        ).encode(),
    }


def pydantic_only(raw: bytes, with_errors: bool = False) -> None:
    try:
        GenerationRequest.model_validate(json.loads(raw), context={"limits": LIMITS})
    except ValidationError as exc:
        if with_errors:
            exc.errors(include_url=False)


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


WIDTHS = (8, 8, 9, 12, 12)  # the figures' columns, after the name and the size


def old_parse_ms(ref: str, repeat: int) -> list[float]:
    """parse_request as it was at git `ref`: its schemas package, exported, in a child process."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", ref, "schemas"], cwd=root, check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        child = subprocess.run(
            [sys.executable, __file__, "--repeat", str(repeat), "--parse-only"],
            env={**os.environ, "PYTHONPATH": tmp},
            check=True,
            capture_output=True,
            text=True,
        )
    return [float(line) for line in child.stdout.split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--old-ref", help="also time parse_request as it was at this git ref")
    parser.add_argument("--parse-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parse_only:  # the child of --old-ref: one figure per event
        for raw in events().values():
            print(median_ms(partial(parse_request, raw, LIMITS), args.repeat))
        return
    old = old_parse_ms(args.old_ref, args.repeat) if args.old_ref else None
    print(
        f"{'event':30} {'bytes':>9} {'json.loads':>10} {'pydantic':>10} {'+ errors()':>11}"
        f" {'parse_request':>14}" + (f" {'at ' + args.old_ref:>14}" if old else "")
    )
    for index, (name, raw) in enumerate(events().items()):
        calls = (
            partial(json.loads, raw),
            partial(pydantic_only, raw),
            partial(pydantic_only, raw, with_errors=True),
            partial(parse_request, raw, LIMITS),
        )
        row = [median_ms(call, args.repeat) for call in calls]
        row += [old[index]] if old else []
        figures = " ".join(f"{ms:>{w}.3f}ms" for ms, w in zip(row, WIDTHS, strict=False))
        print(f"{name:30} {len(raw):>9,} {figures}  {type(parse_request(raw, LIMITS)).__name__}")


if __name__ == "__main__":
    main()
