"""When a fresh request finds one of its image keys taken (`create` refused): its request_id was
used before. Either a request sent twice (the same parameters: its images are all there, the same,
and they answer it), or another request (other parameters: refused `request_id_conflict`, and
the images this attempt created, where nothing was, are removed again), or images that vouch for
nothing (an older worker's, half written: stored again over them). Synchronous store calls: run
them on a thread."""

from __future__ import annotations

import logging

from consumer.generation.engine import GenerationJob
from consumer.output.images import REQUEST_DIGEST_METADATA, image_key_for, look_up, request_digest
from consumer.requests.decision import Stored
from schemas import GenerationResult
from storage import ImageStore, StorageError

log = logging.getLogger(__name__)

_LIST_LIMIT = 100


def look_in_folder(
    job: GenerationJob, store: ImageStore, key_prefix: str
) -> tuple[Stored, GenerationResult | None]:
    """What the request's folder holds (look_up). Raises StorageError."""
    folder = image_key_for(job, key_prefix, 0).rpartition("/")[0]
    return look_up(job, store, key_prefix, store.keys_in(folder, _LIST_LIMIT))


def remove_created(job: GenerationJob, store: ImageStore, key_prefix: str) -> None:
    """The images under the request's keys whose metadata says they are of these parameters:
    under a request_id another request holds, only this attempt can have created them."""
    wanted = request_digest(job)
    for index in range(job.num_images):
        key = image_key_for(job, key_prefix, index)
        try:
            metadata = store.head(key)
            if metadata is not None and metadata.get(REQUEST_DIGEST_METADATA) == wanted:
                store.delete(key)
        except StorageError as exc:
            log.warning("image not removed: %s", exc, extra={"key": key})
