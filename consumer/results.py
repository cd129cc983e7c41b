"""From engine output to stored PNGs and a result event: the plain function behind one request."""

from __future__ import annotations

from consumer.engine import JobOutput
from consumer.models import model_note
from schemas import Audit, GenerationResult, ImageRef, Status
from storage import ImageStore, encode_png, image_id, image_key
from storage.png import DEFAULT_COMPRESS_LEVEL


def png_parameters(output: JobOutput, index: int) -> dict[str, object]:
    """What goes into the PNG's `parameters` text chunk: enough to reproduce the image."""
    job = output.job
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


def encode_output(output: JobOutput, compress_level: int = DEFAULT_COMPRESS_LEVEL) -> list[bytes]:
    return [
        encode_png(image, png_parameters(output, i), compress_level)
        for i, image in enumerate(output.images)
    ]


def audit_for(output: JobOutput) -> Audit:
    job = output.job
    return Audit(
        policy=job.policy,
        duration_sec=f"{output.duration_sec:.3f}",
        model=job.model,
        note=model_note(job.model),
    )


def store_output(
    output: JobOutput, pngs: list[bytes], store: ImageStore, key_prefix: str
) -> GenerationResult:
    """Upload every image (deterministic keys: a redelivery overwrites) and build the result.
    Raises StorageError; the caller decides about retries."""
    job = output.job
    images = []
    for index, png in enumerate(pngs):
        key = image_key(key_prefix, job.request_id, index)
        url = store.put(key, png, "image/png")
        images.append(
            ImageRef(
                image_id=image_id(job.request_id, index),
                url=url,
                seed=job.seeds[index],
                key=key,
                width=job.width,
                height=job.height,
            )
        )
    return GenerationResult(
        request_id=job.request_id, status=Status.COMPLETED, images=images, audit=audit_for(output)
    )
