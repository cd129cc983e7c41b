"""The models a worker knows by name, and what to tell users about them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

TINY_MODEL_ID = "tiny-sdxl"
TINY_MODEL_NOTE = "tiny-sdxl has random weights: it draws noise (for tests and demos only)"
# What a simulated engine (ENGINE=simulated) says of every model and every image it draws.
SIMULATED_NOTE = "simulated engine: images are synthetic (ENGINE=simulated), for load tests"


def model_note(model_id: str) -> str | None:
    return TINY_MODEL_NOTE if model_id == TINY_MODEL_ID else None


def model_kind(model_id: str) -> str:
    if model_id == TINY_MODEL_ID:
        return "built-in"
    path = Path(model_id).expanduser()
    if path.is_dir() or path.is_absolute() or model_id.startswith((".", "~")):
        return "local"
    return "hub"


def describe_models(
    allowed: list[str],
    loaded: list[str],
    engine: str = "diffusers",
    revisions: Mapping[str, str] | None = None,
) -> list[dict[str, object]]:
    """One entry per allowed model for GET /v1/models. A simulated engine loads none of them
    for real: each one's note says so instead of the model's own. `revision`: the one it is
    pinned to (MODEL_REVISIONS), null when it loads the hub's main branch or is no hub model."""
    revisions = revisions or {}

    def note(model_id: str) -> str | None:
        return SIMULATED_NOTE if engine == "simulated" else model_note(model_id)

    return [
        {
            "id": m,
            "kind": model_kind(m),
            "loaded": m in loaded,
            "note": note(m),
            "revision": revisions.get(m),
        }
        for m in allowed
    ]
