"""From engine output to stored images and a result event: the plain function behind one request.

Images are encoded in the job's format (PNG, JPEG or WebP, contract 1.1) with the generation
parameters embedded. A redelivered request (at-least-once) can skip the engine: `stored_result`
answers it from the images an earlier delivery stored, when each one's metadata vouches for
identical parameters, the format and quality included.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from consumer.generation.engine import GenerationJob, JobOutput
from consumer.generation.engine.catalog import model_note
from consumer.requests.decision import Stored
from schemas import Audit, GenerationResult, ImageRef, Status
from schemas.result import AuditLora
from storage import (
    ImageStore,
    content_type,
    encode_image,
    extension,
    image_id,
    image_key,
    parameters_digest,
)
from storage.png import DEFAULT_COMPRESS_LEVEL

# User metadata (x-amz-meta-params-sha256 on S3) of every image `store_output` writes: the
# SHA-256 of its embedded parameters text, so one HEAD per image tells whether it can be reused.
PARAMS_DIGEST_METADATA = "params-sha256"
# ... the SHA-256 of everything about the whole request that changes any image's pixels or bytes
# (all seeds, the image count, format and quality): a request_id reused with other parameters is
# found by one HEAD of any one image it stored.
REQUEST_DIGEST_METADATA = "request-sha256"
# ... and its size, so a result served from the store reports `bytes` without a download.
SIZE_METADATA = "bytes"
# The name of an image in a request's folder: <index>.<ext> (anything else there is not one).
_IMAGE_NAME = re.compile(r"[0-9]+\.[a-z]+")
# audit.note of a result served from the store (followed by "; " and the model's note, if any).
STORED_NOTE = "served from the store: images of an earlier delivery with identical parameters"
STORED_DURATION = "0.000"


def is_stored_answer(result: GenerationResult) -> bool:
    """The result names images an earlier delivery stored (STORED_NOTE), none generated now."""
    return result.audit is not None and (result.audit.note or "").startswith(STORED_NOTE)


def image_parameters(job: GenerationJob, index: int) -> dict[str, object]:
    """What each image embeds: enough to reproduce it. `format` and `quality` only for the lossy
    formats, so that a PNG (and its digest) stays byte-for-byte what contract 1 wrote."""
    parameters: dict[str, object] = {
        "request_id": job.request_id,
        "image_index": index,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "seed": job.seeds[index],
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "cfg": job.cfg,
        "model": job.model,
    }
    if job.format != "png":
        parameters.update(format=job.format, quality=job.quality)
    if job.model_revision is not None:  # MODEL_REVISIONS: absent when unpinned, as before
        parameters["model_revision"] = job.model_revision
    if job.synthetic:  # ENGINE=simulated: absent for real engines, as before
        parameters["engine"] = "simulated"
    parameters.update(_inputs(job, with_digest=True))  # 1.2: absent without them, as before
    return parameters


def _inputs(job: GenerationJob, *, with_digest: bool) -> dict[str, object]:
    """Contract 1.2's parameters, present only when used, so that every earlier digest stays
    what it was: the init image (its key and strength; `with_digest`: its SHA-256, known once
    it is read) and the LoRA adapters with their scales."""
    parameters: dict[str, object] = {}
    if job.init_image is not None:
        parameters.update(init_image=job.init_image, strength=job.strength)
        if with_digest:
            parameters["init_image_sha256"] = job.input_sha256
        else:  # the size the request asked for (0: the input's), not the one it gave
            parameters["requested_size"] = list(job.requested_size)
    if job.loras:
        parameters["loras"] = [[name, scale] for name, scale in job.loras]
    return parameters


def png_parameters(output: JobOutput, index: int) -> dict[str, object]:
    """Kept for callers of contract 1: the parameters of image `index`, whatever the format."""
    return image_parameters(output.job, index)


def image_key_for(job: GenerationJob, key_prefix: str, index: int) -> str:
    """<prefix>/<request_id>/<index>.png|.jpg|.webp, after the job's format."""
    return image_key(key_prefix, job.request_id, index, extension(job.format))


def request_digest(job: GenerationJob) -> str:
    """SHA-256 of what changes the pixels or the bytes of any of the request's images: the
    idempotency check's fingerprint of a request (not its deadline, nor anything else that only
    decides whether it runs). The model's pinned revision (MODEL_REVISIONS) counts; an unpinned
    model adds nothing, so the digests of images stored before pins existed stay valid."""
    parameters: dict[str, object] = {
        "model": job.model,
        "prompt": job.prompt,
        "negative_prompt": job.negative_prompt,
        "width": job.width,
        "height": job.height,
        "steps": job.steps,
        "cfg": job.cfg,
        "seeds": list(job.seeds),
        "format": job.format,
        "quality": job.quality,
    }
    if job.model_revision is not None:
        parameters["model_revision"] = job.model_revision
    if job.synthetic:
        parameters["engine"] = "simulated"
    if job.init_image is not None:
        # Known before the input is read (the store is looked at first): the requested size,
        # not the input's; the input's own digest is in each image's parameters digest.
        parameters.update(width=job.requested_size[0], height=job.requested_size[1])
    parameters.update(_inputs(job, with_digest=False))
    return parameters_digest(parameters)


def image_metadata(job: GenerationJob, index: int, size: int | None = None) -> dict[str, str]:
    """The object metadata stored with image `index` of `job` (`size`: its encoded bytes)."""
    metadata = {
        PARAMS_DIGEST_METADATA: _digest(job, index),
        REQUEST_DIGEST_METADATA: request_digest(job),
    }
    if size is not None:
        metadata[SIZE_METADATA] = str(size)
    return metadata


def encode_output(output: JobOutput, compress_level: int = DEFAULT_COMPRESS_LEVEL) -> list[bytes]:
    """Every image of `output` in its job's format and quality; `compress_level` is PNG's zlib
    level and ignored by the other formats. CPU-heavy: call it from an I/O thread."""
    return [encode_one(output, i, compress_level) for i in range(len(output.images))]


def encode_one(
    output: JobOutput, index: int, compress_level: int = DEFAULT_COMPRESS_LEVEL
) -> bytes:
    """Image `index` of `output`, encoded as `encode_output` does."""
    job = output.job
    parameters = image_parameters(job, index)
    return encode_image(output.images[index], parameters, job.format, job.quality, compress_level)


def audit_for(output: JobOutput) -> Audit:
    """The engine's note on the images (a simulated engine's) if it has one, else the model's."""
    job = output.job
    note = output.note if output.note is not None else model_note(job.model)
    return _audit(job, f"{output.duration_sec:.3f}", note)


def store_output(
    output: JobOutput, encoded: list[bytes], store: ImageStore, key_prefix: str
) -> GenerationResult:
    """Upload every image (deterministic keys: a redelivery overwrites) under its format's
    extension and content type, and build the result. Raises StorageError; the caller decides
    about retries."""
    images = [store_one(output, i, data, store, key_prefix) for i, data in enumerate(encoded)]
    return completed_result(output, images)


def store_one(
    output: JobOutput,
    index: int,
    encoded: bytes,
    store: ImageStore,
    key_prefix: str,
    create: bool = False,
) -> ImageRef:
    """Upload image `index` (encoded) with its metadata; its reference in the result. With
    `create`, only where nothing is stored yet (AlreadyStored otherwise). Raises StorageError."""
    job = output.job
    key = image_key_for(job, key_prefix, index)
    metadata = image_metadata(job, index, len(encoded))
    write = store.create if create else store.put
    url = write(key, encoded, content_type(job.format), metadata)
    return _image_ref(job, index, key, url, len(encoded))


def completed_result(output: JobOutput, images: list[ImageRef]) -> GenerationResult:
    """The `completed` result of `output` once all its images are stored."""
    return _completed(output.job, images, audit_for(output))


def stored_result(
    job: GenerationJob,
    store: ImageStore,
    key_prefix: str,
    listed: Collection[str] | None = None,
) -> GenerationResult | None:
    """The `completed` result of `job` built from images already in the store, or None: what
    `look_up` finds when it is all there for these parameters (`listed`: the keys of the
    request's folder; listed here when the caller did not). URLs are fresh (presigned ones newly
    signed); audit.duration_sec is "0.000" and audit.note starts with STORED_NOTE; `bytes` is
    null for an image stored before it was recorded. Raises StorageError. Synchronous: call it
    from an I/O thread, like `store_output`."""
    if listed is None:
        folder = image_key_for(job, key_prefix, 0).rpartition("/")[0]
        listed = store.keys_in(folder, 1000)
    return look_up(job, store, key_prefix, listed)[1]


def _served(
    job: GenerationJob, store: ImageStore, keys: list[str], sizes: list[int | None]
) -> GenerationResult:
    """The `completed` result of images found in the store, with fresh URLs."""
    images = [
        _image_ref(job, index, key, store.url_for(key), sizes[index])
        for index, key in enumerate(keys)
    ]
    note = "; ".join(n for n in (STORED_NOTE, model_note(job.model)) if n)
    return _completed(job, images, _audit(job, STORED_DURATION, note))


def look_up(
    job: GenerationJob, store: ImageStore, key_prefix: str, listed: Collection[str]
) -> tuple[Stored, GenerationResult | None]:
    """What the store holds for `job` given the keys of its folder (`listed`), and its stored
    `completed` result when that is all of it, for these parameters (Stored.SAME).

    Stored.OTHER when any image there was stored for other parameters (another format or image
    count included): the request_id was used for another request, whose objects must not be
    touched. An image without either digest (written before they existed) vouches for nothing
    and is generated again, as an absent one. One HEAD per image listed, none when there is
    none. Raises StorageError. Synchronous: call it from an I/O thread."""
    images = [key for key in listed if _IMAGE_NAME.fullmatch(key.rpartition("/")[2])]
    if not images:
        return Stored.NOTHING, None
    ours = {image_key_for(job, key_prefix, index): index for index in range(job.num_images)}
    if any(key not in ours for key in images):
        return Stored.OTHER, None
    wanted = request_digest(job)
    sizes: dict[int, int | None] = {}
    for key in images:
        metadata = store.head(key)
        if metadata is None:
            continue  # deleted since the listing
        if REQUEST_DIGEST_METADATA in metadata:
            same = metadata[REQUEST_DIGEST_METADATA] == wanted
        elif PARAMS_DIGEST_METADATA in metadata:  # stored by a worker before request digests
            same = metadata[PARAMS_DIGEST_METADATA] == _digest(job, ours[key])
        else:
            continue
        if not same:
            return Stored.OTHER, None
        sizes[ours[key]] = _size(metadata)
    if len(sizes) < job.num_images:
        return Stored.NOTHING, None
    keys = list(ours)
    return Stored.SAME, _served(job, store, keys, [sizes[index] for index in range(len(keys))])


def _digest(job: GenerationJob, index: int) -> str:
    return parameters_digest(image_parameters(job, index))


def _size(metadata: dict[str, str]) -> int | None:
    value = metadata.get(SIZE_METADATA, "")
    return int(value) if value.isascii() and value.isdigit() else None


def _image_ref(job: GenerationJob, index: int, key: str, url: str, size: int | None) -> ImageRef:
    return ImageRef(
        image_id=image_id(job.request_id, index),
        url=url,
        seed=job.seeds[index],
        key=key,
        width=job.width,
        height=job.height,
        content_type=content_type(job.format),
        bytes=size,
    )


def _audit(job: GenerationJob, duration_sec: str, note: str | None) -> Audit:
    return Audit(
        policy=job.policy,
        duration_sec=duration_sec,
        model=job.model,
        note=note,
        init_image_sha256=job.input_sha256,
        loras=[AuditLora(name=name, scale=scale) for name, scale in job.loras] or None,
    )


def _completed(job: GenerationJob, images: list[ImageRef], audit: Audit) -> GenerationResult:
    return GenerationResult(
        request_id=job.request_id, status=Status.COMPLETED, images=images, audit=audit
    )
