"""Python's cyclic garbage collector while a worker process starts.

torch's, diffusers' and transformers' imports allocate some 0.7 million objects, and the
collector ran ~1,100 times meanwhile, a few of those over every object: a quarter of the import
time on a 2-vCPU box (`python -X importtime`, with and without). So a worker process pauses the
collector from its start until its engine is built (app.py; at most LONGEST_PAUSE_SECONDS),
then collects once, which frees what the imports left in reference cycles (~0.3 s here, while
the group join still waits), and turns it back on. Nothing is frozen: a model evicted from the
cache later must stay collectable.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

# A build that hangs (the watchdog ends it after MODEL_LOAD_TIMEOUT_SECONDS): the collector is
# back on after this long, whatever the build's progress.
LONGEST_PAUSE_SECONDS = 120.0

_paused = False


def pause() -> None:
    """Turn the collector off until `resume` (a no-op when it is off already)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collect once and turn the collector back on, if `pause` turned it off."""
    global _paused
    if not _paused:
        return
    _paused = False
    started = time.perf_counter()
    freed = gc.collect()
    gc.enable()
    log.info(
        "garbage collector on",
        extra={"freed_objects": freed, "seconds": round(time.perf_counter() - started, 3)},
    )
