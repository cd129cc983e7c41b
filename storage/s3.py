"""S3 (and S3-compatible: SeaweedFS, MinIO) image store on boto3."""

from __future__ import annotations

from typing import Any, Protocol, cast

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
)

from storage.base import AlreadyStored, StorageError, check_metadata

# A later request may reuse a request_id with other parameters and rewrite its keys with new
# content, so objects are cacheable but not "immutable". A day behind BASE_URL (a public gateway,
# whose URLs do not expire); with presigned URLs, no longer than they are valid.
PUBLIC_MAX_AGE_SECONDS = 86400
DEFAULT_CACHE_CONTROL = f"public, max-age={PUBLIC_MAX_AGE_SECONDS}"
_RETRYABLE_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "SlowDown",
        "RequestTimeout",
        "RequestLimitExceeded",
        "TooManyRequests",
        "ServiceUnavailable",
        "InternalError",
        "ConditionalRequestConflict",  # 409: another conditional write to the key was in flight
    }
)
_MISSING_BUCKET_CODES = frozenset({"404", "NoSuchBucket", "NotFound"})
# A HEAD response has no body, so a missing key is a bare "404". NoSuchBucket is not among them:
# a missing bucket is a configuration error, not an absent object.
_MISSING_KEY_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
# Botocore errors worth a retry: the connection failed, or the body was cut off while read.
_RETRYABLE_ERRORS = (ConnectionError, HTTPClientError, IncompleteReadError)


class _S3Client(Protocol):
    """The calls this module makes; boto3-stubs' S3Client needs the optional [s3] extra."""

    def put_object(self, **kwargs: Any) -> object: ...
    def get_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def head_object(self, **kwargs: Any) -> dict[str, Any]: ...
    def delete_object(self, **kwargs: Any) -> object: ...
    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]: ...
    def head_bucket(self, **kwargs: Any) -> object: ...
    def create_bucket(self, **kwargs: Any) -> object: ...
    def generate_presigned_url(
        self, ClientMethod: str, Params: dict[str, str], ExpiresIn: int
    ) -> str: ...


def cache_control_for(base_url: str | None, presign_expiry_seconds: int) -> str:
    """The Cache-Control stored with each object. Behind BASE_URL a day; with presigned URLs at
    most their lifetime (S3_PRESIGN_EXPIRY_SECONDS), so that no cache keeps an image for longer
    than the URL that fetched it was meant to work."""
    if base_url:
        return DEFAULT_CACHE_CONTROL
    return f"public, max-age={max(0, min(PUBLIC_MAX_AGE_SECONDS, presign_expiry_seconds))}"


def _client_config() -> Config:
    # boto3 >= 1.36 sends CRC checksums that some S3-compatible stores reject: only when required.
    return Config(
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # No retries inside boto3: the worker owns every retry (consumer/stoppable.Backoff). An
        # upload while the store is away is retried by generation/processing.py, a lookup by
        # requests/attempts.py; boto3 retrying under them multiplied the attempts.
        retries={"mode": "standard", "max_attempts": 1},
        connect_timeout=3,
        read_timeout=30,
        s3={"addressing_style": "path"},
        # Without this, presigned URLs for us-east-1 use legacy SigV2 query auth.
        signature_version="s3v4",
    )


class S3ImageStore:
    """Puts images into one bucket; URLs are BASE_URL/key or presigned GETs."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        base_url: str | None = None,
        presign_expiry_seconds: int = 3600,
        cache_control: str | None = None,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.base_url = base_url
        self.presign_expiry_seconds = presign_expiry_seconds
        self.cache_control = cache_control or cache_control_for(base_url, presign_expiry_seconds)
        # Kept only to scrub them out of error text; never printed (see __repr__).
        self._secrets = tuple(s for s in (access_key_id, secret_access_key) if s)
        creds: dict[str, Any] = {}
        if access_key_id and secret_access_key:
            creds = {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
        self._client = self._make_client(endpoint_url, region, creds)
        # The presigned signature covers the host, so sign with the name clients will use.
        public = public_endpoint_url or endpoint_url
        self._signer = (
            self._client if public == endpoint_url else self._make_client(public, region, creds)
        )

    @staticmethod
    def _make_client(endpoint_url: str | None, region: str, creds: dict[str, Any]) -> _S3Client:
        core = botocore.session.get_session()
        # Timestamps (LastModified, in every HEAD and listed key) stay strings: nothing here reads
        # them, and dateutil's parser cost ~0.5 ms of CPU per call, a quarter of a HEAD's.
        parsers = core.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=str)
        session = boto3.session.Session(region_name=region, botocore_session=core, **creds)
        client = session.client("s3", endpoint_url=endpoint_url, config=_client_config())
        return cast(_S3Client, client)

    def __repr__(self) -> str:
        return f"S3ImageStore(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Upload `data` to `key` (overwrites data and metadata) and return its client URL.
        `metadata` becomes x-amz-meta-* user metadata, which `head` returns."""
        return self._put_object(key, data, content_type, metadata, only_new=False)

    def create(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """`put` with `If-None-Match: *`: HTTP 412 (something is stored there) raises
        AlreadyStored; a 409 (a concurrent conditional write) is retryable."""
        return self._put_object(key, data, content_type, metadata, only_new=True)

    def _put_object(
        self,
        key: str,
        data: bytes,
        content_type: str,
        metadata: dict[str, str] | None,
        only_new: bool,
    ) -> str:
        check_metadata(metadata)
        condition = {"IfNoneMatch": "*"} if only_new else {}
        action = f"{'create' if only_new else 'put'} {key!r}"
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                CacheControl=self.cache_control,
                Metadata=metadata or {},
                **condition,
            )
        except ClientError as exc:
            if only_new and _error_code(exc) == "PreconditionFailed":
                raise AlreadyStored(key) from None
            raise self._wrap(exc, action) from None
        except BotoCoreError as exc:
            raise self._wrap(exc, action) from None
        return self.url_for(key)

    def get(self, key: str) -> bytes | None:
        """The object's bytes (read whole: small objects only), or None when it does not exist."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=key)
            # Reading the body is part of the call: a cut connection surfaces here.
            body: bytes = response["Body"].read()
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return None
            raise self._wrap(exc, f"get {key!r}") from None
        except BotoCoreError as exc:
            raise self._wrap(exc, f"get {key!r}") from None
        return body

    def get_prefix(self, key: str, limit: int) -> bytes | None:
        """The object's first `limit` + 1 bytes at most (more than `limit`: the object is
        larger), or None when it does not exist: an input is never read whole before its size
        is known to be acceptable (a server that ignores the range is read that far only)."""
        try:
            response = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit}"
            )
            body: bytes = response["Body"].read(limit + 1)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return None
            if _error_code(exc) == "InvalidRange":  # an empty object has no byte 0
                return b""
            raise self._wrap(exc, f"get {key!r}") from None
        except BotoCoreError as exc:
            raise self._wrap(exc, f"get {key!r}") from None
        return body

    def head(self, key: str) -> dict[str, str] | None:
        """The object's user metadata ({} when none), or None when it does not exist."""
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) in _MISSING_KEY_CODES:
                return None
            raise self._wrap(exc, f"head {key!r}") from None
        except BotoCoreError as exc:
            raise self._wrap(exc, f"head {key!r}") from None
        # Botocore keeps the server's spelling after "x-amz-meta-"; some servers capitalise it.
        return {str(name).lower(): str(value) for name, value in response["Metadata"].items()}

    def delete(self, key: str) -> None:
        """Delete `key`; S3 answers a missing key with success, and some servers with 404."""
        try:
            self._client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _error_code(exc) not in _MISSING_KEY_CODES:
                raise self._wrap(exc, f"delete {key!r}") from None
        except BotoCoreError as exc:
            raise self._wrap(exc, f"delete {key!r}") from None

    def keys_in(self, folder: str, limit: int) -> list[str]:
        """One ListObjectsV2 request (strongly consistent on S3, SeaweedFS and MinIO): the
        objects directly under `folder`/, not those in folders below it. Keys ending in "/" are
        folder placeholders, not objects: SeaweedFS lists the emptied folder itself as one."""
        prefix = folder.rstrip("/") + "/"
        try:
            response = self._client.list_objects_v2(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/", MaxKeys=limit + 1
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._wrap(exc, f"list {folder!r}") from None
        keys = (str(item["Key"]) for item in response.get("Contents", []))
        return sorted(key for key in keys if not key.endswith("/"))[:limit]

    def url_for(self, key: str) -> str:
        """BASE_URL/key when a public gateway is configured, else a presigned GET URL."""
        if self.base_url:
            return self.base_url.rstrip("/") + "/" + key
        try:
            return self._signer.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=self.presign_expiry_seconds,
            )
        except (BotoCoreError, ClientError) as exc:
            raise self._wrap(exc, f"presign {key!r}") from None

    def check(self) -> None:
        """Raise StorageError unless the bucket answers a HEAD request."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError) as exc:
            raise self._wrap(exc, "head bucket") from None

    def ensure_bucket(self) -> None:
        """Create the bucket when it does not exist yet (idempotent)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _error_code(exc) not in _MISSING_BUCKET_CODES:
                raise self._wrap(exc, "head bucket") from None
        except BotoCoreError as exc:
            raise self._wrap(exc, "head bucket") from None
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            # Another worker may have won the race; that is the outcome we wanted.
            if _error_code(exc) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._wrap(exc, "create bucket") from None
        except BotoCoreError as exc:
            raise self._wrap(exc, "create bucket") from None

    def _wrap(self, exc: BotoCoreError | ClientError, action: str) -> StorageError:
        """Turn a botocore error into a StorageError with a scrubbed message.

        The chain is cut (`from None`) by callers because botocore's own text may echo request
        details; the code and status are kept as attributes instead.
        """
        where = f"s3 {action} in bucket {self.bucket!r}"
        if isinstance(exc, ClientError):
            code = _error_code(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            retryable = code in _RETRYABLE_CODES or (status or 0) >= 500 or status == 429
            message = f"{where} failed: {code} (HTTP {status})"
            return StorageError(message, retryable=retryable, code=code, status=status)
        retryable = isinstance(exc, _RETRYABLE_ERRORS)
        message = self._scrub(f"{where} failed: {type(exc).__name__}: {exc}")
        return StorageError(message, retryable=retryable, code=type(exc).__name__)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "Unknown"))
