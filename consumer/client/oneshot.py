"""`python -m consumer generate`: one request through the real engine and storage, no Kafka."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from consumer.generation.engine import EngineError, build_engine, plan_job
from consumer.generation.inputs import InputReader
from consumer.output.images import encode_output, store_output
from consumer.settings import Settings
from schemas import Accepted, ErrorCode, GenerationResult, Rejected, parse_request
from storage import ImageStore, LocalImageStore, StorageError, build_store

log = logging.getLogger(__name__)
_IMAGE_NAME = re.compile(r"[0-9]+\.(png|jpg|webp)")
# What `generate --out NAME` writes when --format is not given.
_SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp"}


class InvalidRequestError(ValueError):
    """The command line did not make a request with a usable request_id."""


def generate_once(
    settings: Settings, request: dict[str, object], out: Path | None
) -> GenerationResult:
    """Validate like the worker does, generate, store (to `out` when given), return the result."""
    outcome = parse_request(json.dumps(request).encode(), settings.request_limits())
    if isinstance(outcome, Rejected):
        return outcome.result()
    if not isinstance(outcome, Accepted):  # no usable request_id: no result to hang it on
        raise InvalidRequestError(outcome.error.message)
    job = plan_job(outcome.request, settings.default_negative_prompt, settings.pinned_revisions())
    if job.init_image is not None:  # image-to-image (1.2): read from the configured store
        reader = InputReader(
            build_store(settings),
            int(settings.max_input_image_bytes),
            settings.min_image_size,
            settings.max_image_size,
        )
        prepared = reader.prepare(job.init_image, [job])
        if isinstance(prepared, ErrorCode):
            return GenerationResult.failed(job.request_id, prepared)
        (job,) = prepared
    engine = build_engine(settings.engine_config())
    try:
        output = engine.generate([job], settings.generation_timeout_seconds)[0]
    except EngineError as exc:
        log.warning("generation failed: %s", exc.message, extra={"request_id": job.request_id})
        return GenerationResult.failed(job.request_id, exc.code)
    try:
        store: ImageStore = _FileStore(out.resolve()) if out else build_store(settings)
        return store_output(
            output,
            encode_output(output, settings.png_compress_level),
            store,
            _key_prefix(settings, out),
        )
    except StorageError as exc:
        log.warning("storing failed: %s", exc, extra={"request_id": job.request_id})
        return GenerationResult.failed(job.request_id, ErrorCode.STORAGE_FAILED)


def _key_prefix(settings: Settings, out: Path | None) -> str:
    return "" if out else settings.s3_key_prefix


class _FileStore(LocalImageStore):
    """`--out x.png` writes x.png (and x-1.png, x-2.png, ... for more images; the same for
    x.jpg or x.webp).

    Image keys (".../<index>.png|jpg|webp") map to those names for every operation, so get, head and
    delete see what put wrote; other keys stay as they are, under the folder of x.png. No metadata
    sidecars: the user asked for PNGs only, so `head` reports {} and nothing is reused from here.
    """

    def __init__(self, out: Path) -> None:
        super().__init__(out.parent, base_url=None)
        self._out = out

    def path_for(self, key: str) -> Path:
        name = key.rsplit("/", 1)[-1]
        if _IMAGE_NAME.fullmatch(name):
            index = int(name.partition(".")[0])
            key = self._out.name if index == 0 else f"{self._out.stem}-{index}{self._out.suffix}"
        return super().path_for(key)

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        return super().put(key, data, content_type)


def request_from_args(
    prompt: str,
    *,
    seed: int | None,
    width: int,
    height: int,
    steps: int,
    cfg: float,
    num_images: int,
    model: str | None,
    negative_prompt: str | None,
    request_id: str | None = None,
    image_format: str | None = None,
    quality: int | None = None,
) -> dict[str, object]:
    params: dict[str, object] = {
        "width": width,
        "height": height,
        "steps": steps,
        "cfg": cfg,
        "num_images": num_images,
    }
    if seed is not None:
        params["seed"] = seed
    if model is not None:
        params["model"] = model
    # Only when asked for: a version-1 command line keeps making the same request (and id).
    if image_format is not None:
        params["format"] = image_format
    if quality is not None:
        params["quality"] = quality
    body: dict[str, object] = {
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "params": params,
    }
    return {"request_id": request_id or content_request_id(body), **body}


def format_for_out(out: Path | None, requested: str | None) -> str | None:
    """The format to ask for: `requested`, else the one --out's suffix names (x.webp), else None
    (the request's default, png). InvalidRequestError when they contradict."""
    implied = _SUFFIX_FORMATS.get(out.suffix.lower()) if out is not None else None
    if requested is not None and implied is not None and requested != implied:
        raise InvalidRequestError(f"--format {requested} does not match --out {out}")
    # x.png implies the default: left out, so a version-1 command line makes the same request.
    return requested or (None if implied == "png" else implied)


def content_request_id(body: dict[str, object]) -> str:
    """The same request gets the same id (and so the same PNG bytes and object keys)."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f"cli-{digest[:16]}"
