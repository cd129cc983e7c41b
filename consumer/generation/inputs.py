"""Image-to-image inputs (contract 1.2): read from the worker's own store, checked, decoded and
sized for their jobs. Synchronous: called on an I/O thread, once per batch for each key.

Reading is bounded: at most MAX_INPUT_IMAGE_BYTES (+1) bytes are fetched, and the pixel count is
checked from the header before the pixels are decoded (Pillow's decompression-bomb guard is not
relied on). Whatever is wrong with an input is the request's refusal (`rejected`, with its own
code); a store that is away is the caller's to retry, as for uploads.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import warnings
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace

from PIL import Image

from consumer.generation.engine import GenerationJob
from schemas import ErrorCode
from schemas.limits import ABSOLUTE_MAX_IMAGE_SIZE, SIZE_MULTIPLE
from storage import ImageStore, format_of

MAX_INPUT_PIXELS_SIDE = ABSOLUTE_MAX_IMAGE_SIZE  # each side of an init image, at most
DEFAULT_MAX_INPUT_BYTES = 10 * 1024 * 1024  # MAX_INPUT_IMAGE_BYTES' default

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputImage:
    """A decoded init image: its bytes' SHA-256 (hex) and its pixels (RGB)."""

    sha256: str
    pixels: Image.Image


class InputRefused(Exception):
    """The input cannot be used: `code` is the request's refusal."""

    def __init__(self, code: ErrorCode, detail: str) -> None:
        super().__init__(detail)
        self.code = code


def decode_input(data: bytes | None, max_bytes: int) -> InputImage:
    """The checked, decoded init image; raises InputRefused."""
    if data is None:
        raise InputRefused(ErrorCode.INIT_IMAGE_NOT_FOUND, "no such object")
    if len(data) > max_bytes:
        raise InputRefused(ErrorCode.INIT_IMAGE_TOO_LARGE, f"over {max_bytes} bytes")
    kind = format_of(data)
    if kind is None:
        raise InputRefused(ErrorCode.INIT_IMAGE_UNSUPPORTED_FORMAT, "not PNG, JPEG or WebP")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[kind.upper()])
            width, height = image.size
            if width > MAX_INPUT_PIXELS_SIDE or height > MAX_INPUT_PIXELS_SIDE:
                raise InputRefused(
                    ErrorCode.INIT_IMAGE_TOO_LARGE, f"{width}x{height} pixels is over the bound"
                )
            image.load()
            pixels = image.convert("RGB")
    except InputRefused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputRefused(ErrorCode.INIT_IMAGE_TOO_LARGE, "too many pixels") from exc
    except Exception as exc:  # truncated, corrupt: Pillow raises many kinds
        raise InputRefused(ErrorCode.INIT_IMAGE_UNDECODABLE, type(exc).__name__) from exc
    return InputImage(hashlib.sha256(data).hexdigest(), pixels)


def read_input(store: ImageStore, key: str, max_bytes: int) -> InputImage:
    """Read and decode one init image. Raises InputRefused or StorageError."""
    return decode_input(store.get_prefix(key, max_bytes), max_bytes)


def output_side(requested: int, input_side: int, min_size: int, max_size: int) -> int:
    """A side of the output: the requested one, or (0) the input's, rounded down to a multiple
    of 8 and held within MIN_IMAGE_SIZE..MAX_IMAGE_SIZE."""
    if requested:
        return requested
    side = input_side - input_side % SIZE_MULTIPLE
    return max(min_size, min(max_size, side))


def sized_job(job: GenerationJob, image: InputImage, min_size: int, max_size: int) -> GenerationJob:
    """`job` with its output size known and its input's digest and pixels, resized to that
    size (Lanczos) when it differs."""
    width = output_side(job.requested_size[0], image.pixels.width, min_size, max_size)
    height = output_side(job.requested_size[1], image.pixels.height, min_size, max_size)
    pixels = image.pixels
    if pixels.size != (width, height):
        pixels = pixels.resize((width, height), Image.Resampling.LANCZOS)
    return replace(job, width=width, height=height, input_sha256=image.sha256, input_pixels=pixels)


def keys_of(jobs: Sequence[GenerationJob]) -> list[str]:
    """The distinct init-image keys of jobs whose input is not read yet, in order."""
    return list(
        dict.fromkeys(job.init_image for job in jobs if job.init_image and job.input_pending)
    )


class InputReader:
    """Reads each init image of a batch once and sizes its jobs (on an I/O thread)."""

    def __init__(
        self,
        store: ImageStore,
        max_bytes: int = DEFAULT_MAX_INPUT_BYTES,
        min_size: int = 64,
        max_size: int = ABSOLUTE_MAX_IMAGE_SIZE,
    ) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._min_size = min_size
        self._max_size = max_size

    def prepare(self, key: str, jobs: Sequence[GenerationJob]) -> list[GenerationJob] | ErrorCode:
        """The jobs reading `key`, sized with their input, or the refusal they all get. Raises
        StorageError (the store is away: the caller retries)."""
        try:
            image = read_input(self._store, key, self._max_bytes)
        except InputRefused as refused:
            log.info("init image refused: %s (%s)", refused.code.value, refused, extra={"key": key})
            return refused.code
        return [sized_job(job, image, self._min_size, self._max_size) for job in jobs]


async def prepare_batch(
    reader: InputReader, jobs: list[GenerationJob], io_threads: Executor
) -> tuple[list[GenerationJob], dict[str, ErrorCode]]:
    """Each init image of `jobs` read once, side by side on `io_threads`, its jobs sized: the
    jobs to run (the others as they were), and the refused ones' codes by request_id. Raises
    StorageError when the store cannot be read (the caller retries)."""
    keys = keys_of(jobs)
    if not keys:
        return jobs, {}
    loop = asyncio.get_running_loop()
    users = {key: [job for job in jobs if job.init_image == key] for key in keys}
    calls = [loop.run_in_executor(io_threads, reader.prepare, key, users[key]) for key in keys]
    prepared = await asyncio.gather(*calls)
    sized = {job.request_id: job for done in prepared if isinstance(done, list) for job in done}
    refused = {
        job.request_id: done
        for key, done in zip(keys, prepared, strict=True)
        if isinstance(done, ErrorCode)
        for job in users[key]
    }
    ready = [sized.get(job.request_id, job) for job in jobs if job.request_id not in refused]
    return ready, refused


def by_batch_key(jobs: list[GenerationJob]) -> list[list[GenerationJob]]:
    """The jobs grouped by batch key, in order of first appearance (one group, as given, when
    they all share one): sized by their inputs, image-to-image jobs may need more than one
    engine call."""
    groups: dict[object, list[GenerationJob]] = {}
    for job in jobs:
        groups.setdefault(job.batch_key, []).append(job)
    return list(groups.values())
