"""From engine output to stored PNGs and a result event: the plain function behind one request.

A redelivered request (at-least-once) can skip the engine: `stored_result` answers it from the
images an earlier delivery stored, when each one's metadata vouches for identical parameters.
"""

from __future__ import annotations

from consumer.engine import GenerationJob, JobOutput
from consumer.models import model_note
from schemas import Audit, GenerationResult, ImageRef, Status
from storage import ImageStore, encode_png, image_id, image_key, parameters_digest
from storage.png import DEFAULT_COMPRESS_LEVEL

# User metadata (x-amz-meta-params-sha256 on S3) of every image `store_output` writes: the
# SHA-256 of its PNG parameters chunk, so one HEAD per image tells whether it can be reused.
PARAMS_DIGEST_METADATA = "params-sha256"
# audit.note of a result served from the store (followed by "; " and the model's note, if any).
STORED_NOTE = "served from the store: images of an earlier delivery with identical parameters"
STORED_DURATION = "0.000"


def image_parameters(job: GenerationJob, index: int) -> dict[str, object]:
    """What goes into the PNG's `parameters` text chunk: enough to reproduce the image."""
    return {
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


def png_parameters(output: JobOutput, index: int) -> dict[str, object]:
    return image_parameters(output.job, index)


def image_metadata(job: GenerationJob, index: int) -> dict[str, str]:
    """The object metadata stored with image `index` of `job`."""
    return {PARAMS_DIGEST_METADATA: _digest(job, index)}


def encode_output(output: JobOutput, compress_level: int = DEFAULT_COMPRESS_LEVEL) -> list[bytes]:
    return [
        encode_png(image, png_parameters(output, i), compress_level)
        for i, image in enumerate(output.images)
    ]


def audit_for(output: JobOutput) -> Audit:
    job = output.job
    return _audit(job, f"{output.duration_sec:.3f}", model_note(job.model))


def store_output(
    output: JobOutput, pngs: list[bytes], store: ImageStore, key_prefix: str
) -> GenerationResult:
    """Upload every image (deterministic keys: a redelivery overwrites) and build the result.
    Raises StorageError; the caller decides about retries."""
    job = output.job
    images = []
    for index, png in enumerate(pngs):
        key = image_key(key_prefix, job.request_id, index)
        url = store.put(key, png, "image/png", image_metadata(job, index))
        images.append(_image_ref(job, index, key, url))
    return _completed(job, images, audit_for(output))


def stored_result(
    job: GenerationJob, store: ImageStore, key_prefix: str
) -> GenerationResult | None:
    """The `completed` result of `job` built from images already in the store, or None.

    None unless every image exists under its key with metadata vouching for this job's
    parameters (an image missing, stored for other parameters, or an old object without the
    metadata). One HEAD per image, no download. URLs are fresh (presigned ones newly signed);
    audit.duration_sec is "0.000" and audit.note starts with STORED_NOTE. Raises StorageError.
    Synchronous: call it from an I/O thread, like `store_output`.
    """
    keys = [image_key(key_prefix, job.request_id, index) for index in range(job.num_images)]
    for index, key in enumerate(keys):
        metadata = store.head(key)
        if metadata is None or metadata.get(PARAMS_DIGEST_METADATA) != _digest(job, index):
            return None
    images = [_image_ref(job, index, key, store.url_for(key)) for index, key in enumerate(keys)]
    note = "; ".join(n for n in (STORED_NOTE, model_note(job.model)) if n)
    return _completed(job, images, _audit(job, STORED_DURATION, note))


def _digest(job: GenerationJob, index: int) -> str:
    return parameters_digest(image_parameters(job, index))


def _image_ref(job: GenerationJob, index: int, key: str, url: str) -> ImageRef:
    return ImageRef(
        image_id=image_id(job.request_id, index),
        url=url,
        seed=job.seeds[index],
        key=key,
        width=job.width,
        height=job.height,
    )


def _audit(job: GenerationJob, duration_sec: str, note: str | None) -> Audit:
    return Audit(policy=job.policy, duration_sec=duration_sec, model=job.model, note=note)


def _completed(job: GenerationJob, images: list[ImageRef], audit: Audit) -> GenerationResult:
    return GenerationResult(
        request_id=job.request_id, status=Status.COMPLETED, images=images, audit=audit
    )
