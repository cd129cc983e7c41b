"""Deterministic object keys and image ids.

Both are pure functions of (request_id, index): a redelivered request (at-least-once delivery)
overwrites the objects it wrote the first time instead of leaving orphans next to them.
"""

from __future__ import annotations

import hashlib

_UNSAFE_IDS = frozenset({"", ".", ".."})
_EXTENSIONS = frozenset({"png", "jpg", "webp"})


def _check_parts(request_id: str, index: int) -> None:
    # The request schema allows '.', so "." and ".." are valid ids there; as path segments they
    # would alias or escape the prefix, so refuse them here where the key is built.
    if request_id in _UNSAFE_IDS or "/" in request_id or "\\" in request_id:
        raise ValueError(f"request_id {request_id!r} cannot be used as a key segment")
    if index < 0:
        raise ValueError(f"image index must be >= 0, got {index}")


def image_key(prefix: str, request_id: str, index: int, extension: str = "png") -> str:
    """Return "{prefix}/{request_id}/{index}.{extension}" (png, jpg or webp: see
    storage.images.extension); an empty prefix gives no leading slash."""
    _check_parts(request_id, index)
    if extension not in _EXTENSIONS:
        raise ValueError(f"unknown image extension {extension!r}")
    name = f"{request_id}/{index}.{extension}"
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def image_id(request_id: str, index: int) -> str:
    """Return "im_" + the first 12 hex chars of sha256("{request_id}/{index}")."""
    digest = hashlib.sha256(f"{request_id}/{index}".encode()).hexdigest()
    return f"im_{digest[:12]}"
