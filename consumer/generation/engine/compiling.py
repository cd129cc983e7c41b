"""Which calls of a compiled pipeline compile: for the watchdog, such a call is a load.

torch.compile (TORCH_COMPILE) compiles a UNet on its first call and again for each new input
shape: the latents' size (image size, images per call, doubled by classifier-free guidance) and
the text embeddings'. That takes minutes with `mode="max-autotune"`, far longer than a
generation's limit; the denoising steps after it take the usual time. So an engine marks the
first call of each shape of a compiled pipeline `compiling` (activity.py) until its first step
ends, and starts the call's timeout there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from consumer.generation.engine.jobs import GenerationJob

# What decides the UNet's input shapes: width, height, images per call, guidance on or off.
Shape = tuple[int, int, int, bool]


def call_shape(jobs: Sequence[GenerationJob]) -> Shape:
    first = jobs[0]
    # SDXL pipelines run the UNet on a doubled batch when guidance_scale > 1.
    return (first.width, first.height, sum(job.num_images for job in jobs), first.cfg > 1.0)


class CompiledShapes:
    """The shapes each model's compiled pipeline has run, forgotten when the model is unloaded
    (a reloaded model is compiled anew). Thread-safe: the engine thread adds, the cache's
    unload hook may forget from another thread (a purge)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, set[Shape]] = {}

    def is_new(self, model_id: str, shape: Shape) -> bool:
        with self._lock:
            return shape not in self._seen.get(model_id, set())

    def add(self, model_id: str, shape: Shape) -> None:
        with self._lock:
            self._seen.setdefault(model_id, set()).add(shape)

    def forget(self, model_ids: Iterable[str]) -> None:
        with self._lock:
            for model_id in model_ids:
                self._seen.pop(model_id, None)
