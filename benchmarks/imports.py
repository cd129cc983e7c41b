"""The heavy imports of a worker's start, timed in fresh interpreters with Python's garbage
collector on (the baseline) and off (what a worker process does: consumer/ops/startup_gc.py),
alternating.

`python -m benchmarks.imports [--runs N]`. A benchmark, not a test: it prints figures only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

# The imports an engine build makes (consumer/generation/engine/loading.py), then one
# collection, timed.
SCRIPT = """
import gc, json, sys, time
if sys.argv[1] == "off":
    gc.disable()
started = time.perf_counter()
import torch
from diffusers import AutoPipelineForText2Image
from transformers import CLIPTextModel
imported = time.perf_counter() - started
collections = sum(s["collections"] for s in gc.get_stats())
started = time.perf_counter()
gc.collect()
print(json.dumps({"import_s": imported, "collect_s": time.perf_counter() - started,
                  "collections": collections}))
"""


def run_once(collector: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, collector],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PATH": ""},
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for _ in range(args.runs):
        for collector in ("on", "off"):
            runs[collector].append(run_once(collector))
    print("collector   imports (s, each run)        median   collections   one collection after")
    for collector, figures in runs.items():
        imports = [f["import_s"] for f in figures]
        print(
            f"{collector:9}   {', '.join(f'{s:.2f}' for s in imports):27}  "
            f"{statistics.median(imports):5.2f}   {figures[0]['collections']:11.0f}   "
            f"{statistics.median(f['collect_s'] for f in figures):.2f} s"
        )


if __name__ == "__main__":
    main()
