"""Image-to-image inputs from the producer's side (contract 1.2): an init image uploaded into the
worker's bucket under INPUT_PREFIX, named by its content (so the same picture is stored once and
a request that names it keeps meaning the same bytes), and the `params` that use it.

The producer needs write access to that prefix of the bucket; the worker only ever reads it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from storage import ImageStore, format_of

_EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}


def input_key(prefix: str, data: bytes) -> str:
    """`<INPUT_PREFIX><sha256 of the bytes>.<png|jpg|webp>`. Raises ValueError for bytes that
    are no PNG, JPEG or WebP image (the worker would refuse them)."""
    kind = format_of(data)
    if kind is None:
        raise ValueError("an init image must be a PNG, JPEG or WebP image")
    return f"{prefix}{hashlib.sha256(data).hexdigest()}.{_EXTENSIONS[kind]}"


def upload_init_image(store: ImageStore, prefix: str, data: bytes) -> dict[str, str]:
    """Store `data` under its input key; `params.init_image` naming it. Synchronous (boto3):
    call it from a thread in a coroutine. Raises StorageError or ValueError."""
    key = input_key(prefix, data)
    kind = format_of(data) or "png"
    store.put(key, data, f"image/{kind}")
    return {"key": key}


def parse_lora(text: str) -> dict[str, Any]:
    """`NAME:SCALE` (or `NAME`, scale 1) as a `params.loras` entry. Raises ValueError."""
    name, sep, scale = text.rpartition(":")
    if not sep:
        return {"name": text, "scale": 1.0}
    if not name:
        raise ValueError(f"--lora {text!r}: expected NAME:SCALE")
    try:
        return {"name": name, "scale": float(scale)}
    except ValueError:
        raise ValueError(f"--lora {text!r}: the scale must be a number") from None


def lora_params(loras: Iterable[str]) -> list[dict[str, Any]]:
    return [parse_lora(text) for text in loras]
