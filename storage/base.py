"""The storage interface the worker codes against, and the settings it is built from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Protocol

from pydantic import SecretStr


class StorageError(Exception):
    """A failed storage operation.

    `retryable` tells the caller whether trying again may help (connection refused, 5xx,
    throttling) or not (access denied, missing bucket, an unsafe key). Messages never carry
    credentials: callers log them and put them into result events.
    """

    def __init__(
        self, message: str, *, retryable: bool, code: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.status = status

    def __repr__(self) -> str:
        return f"StorageError({self.args[0]!r}, retryable={self.retryable})"


class AlreadyStored(StorageError):
    """`create` found an object under its key already: nothing was written."""

    def __init__(self, key: str) -> None:
        super().__init__(f"an object exists under {key!r} already", retryable=False)
        self.key = key


class ImageStore(Protocol):
    """Where encoded images go. Synchronous: the worker calls it from a thread, not the loop.

    A missing key is not an error for `get`, `head` and `delete`: None, None and a no-op."""

    @property
    def name(self) -> str:
        """Short backend name for logs and health output ("s3", "local")."""
        ...

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Store `data` under `key` (overwriting data and metadata) and return the URL clients use.
        `metadata` (see `check_metadata`) is what `head` returns later."""
        ...

    def create(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """`put`, only when nothing is stored under `key` (S3's `If-None-Match: *`), in one
        call: raises AlreadyStored (and writes nothing) when something is. A store that ignores
        the condition overwrites instead: `supports_create` tells them apart."""
        ...

    def get(self, key: str) -> bytes | None:
        """The whole object, or None when `key` does not exist. Small objects only: it is read
        into memory in one piece (attempt journals, init images; not images on the hot path)."""
        ...

    def get_prefix(self, key: str, limit: int) -> bytes | None:
        """At most the first `limit` + 1 bytes of the object (more than `limit`: it is larger;
        nothing past that is fetched), or None when `key` does not exist."""
        ...

    def head(self, key: str) -> dict[str, str] | None:
        """The object's user metadata ({} when it was stored without), or None when missing."""
        ...

    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key succeeds."""
        ...

    def keys_in(self, folder: str, limit: int) -> list[str]:
        """The keys of the objects directly inside `folder` (a key prefix, without the trailing
        "/"), sorted, at most `limit` of them; [] when there is none."""
        ...

    def url_for(self, key: str) -> str:
        """Return the URL clients use for `key` (presigned or under BASE_URL)."""
        ...

    def check(self) -> None:
        """Raise StorageError when the store is not reachable or usable (health checks)."""
        ...


def supports_create(store: ImageStore, probe_key: str) -> bool:
    """Whether the store honours `create`'s condition: a probe object created twice must be
    refused the second time (some S3-compatible stores ignore `If-None-Match` and overwrite).
    Raises StorageError when the store cannot be reached."""
    store.create(probe_key, b"{}", "application/json")
    try:
        store.create(probe_key, b"{}", "application/json")
    except AlreadyStored:
        return True
    finally:
        store.delete(probe_key)
    return False


# S3 sends user metadata as x-amz-meta-<name> HTTP headers: names are case-insensitive tokens
# (lowercase here, so what `head` returns compares equal to what `put` got), values plain ASCII,
# and all of it together at most 2 KB.
_METADATA_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_METADATA_VALUE = re.compile(r"[ -~]*")
MAX_METADATA_BYTES = 2048


def check_metadata(metadata: dict[str, str] | None) -> None:
    """Raise a non-retryable StorageError for metadata that S3 could not round-trip unchanged."""
    for name, value in (metadata or {}).items():
        valid = _METADATA_NAME.fullmatch(name) and _METADATA_VALUE.fullmatch(value)
        # Surrounding blanks would be trimmed as header whitespace and come back different.
        if not valid or value != value.strip():
            raise _invalid_metadata(f"invalid metadata {name!r}")
    if sum(len(name) + len(value) for name, value in (metadata or {}).items()) > MAX_METADATA_BYTES:
        raise _invalid_metadata(f"metadata over {MAX_METADATA_BYTES} bytes")


def _invalid_metadata(message: str) -> StorageError:
    return StorageError(message, retryable=False, code="invalid_metadata")


class StorageSettings(Protocol):
    """The attributes `build_store` reads; the project's pydantic Settings matches structurally.

    Read-only properties so that a plain (mutable) model field satisfies each member.
    """

    @property
    def storage_backend(self) -> Literal["s3", "local"]: ...
    @property
    def s3_endpoint_url(self) -> str | None: ...
    @property
    def s3_public_endpoint_url(self) -> str | None: ...
    @property
    def s3_bucket(self) -> str: ...
    @property
    def s3_region(self) -> str: ...
    @property
    def s3_create_bucket(self) -> bool: ...
    @property
    def s3_presign_expiry_seconds(self) -> int: ...
    @property
    def aws_access_key_id(self) -> SecretStr | None: ...
    @property
    def aws_secret_access_key(self) -> SecretStr | None: ...
    @property
    def base_url(self) -> str | None: ...
    @property
    def data_dir(self) -> Path: ...
