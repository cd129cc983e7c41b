"""Image storage: deterministic keys, PNG / JPEG / WebP encoding and the S3 / local backends."""

from __future__ import annotations

from storage.base import (
    AlreadyStored,
    ImageStore,
    StorageError,
    StorageSettings,
    supports_create,
)
from storage.images import (
    ImageFormat,
    content_type,
    encode_image,
    extension,
    format_of,
    read_image_parameters,
)
from storage.keys import image_id, image_key
from storage.local import LocalImageStore
from storage.png import encode_png, parameters_digest, read_png_parameters
from storage.s3 import S3ImageStore

__all__ = [
    "AlreadyStored",
    "ImageFormat",
    "ImageStore",
    "LocalImageStore",
    "S3ImageStore",
    "StorageError",
    "StorageSettings",
    "build_store",
    "content_type",
    "encode_image",
    "encode_png",
    "extension",
    "format_of",
    "image_id",
    "image_key",
    "parameters_digest",
    "read_image_parameters",
    "read_png_parameters",
    "supports_create",
]


def build_store(settings: StorageSettings) -> ImageStore:
    """Build the configured backend; for S3, create the bucket first when asked to."""
    if settings.storage_backend == "local":
        return LocalImageStore(settings.data_dir / "images", settings.base_url)
    key_id, secret = settings.aws_access_key_id, settings.aws_secret_access_key
    store = S3ImageStore(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        public_endpoint_url=settings.s3_public_endpoint_url,
        region=settings.s3_region,
        # Both or neither: half a key pair falls back to boto3's default credential chain.
        access_key_id=key_id.get_secret_value() if key_id else None,
        secret_access_key=secret.get_secret_value() if secret else None,
        base_url=settings.base_url,
        presign_expiry_seconds=settings.s3_presign_expiry_seconds,
    )
    if settings.s3_create_bucket:
        store.ensure_bucket()
    return store
