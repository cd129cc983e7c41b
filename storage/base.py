"""The storage interface the worker codes against, and the settings it is built from."""

from __future__ import annotations

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


class ImageStore(Protocol):
    """Where encoded images go. Synchronous: the worker calls it from a thread, not the loop."""

    @property
    def name(self) -> str:
        """Short backend name for logs and health output ("s3", "local")."""
        ...

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> str:
        """Store `data` under `key` (overwriting) and return the URL clients use."""
        ...

    def url_for(self, key: str) -> str:
        """Return the URL clients use for `key` (presigned or under BASE_URL)."""
        ...

    def check(self) -> None:
        """Raise StorageError when the store is not reachable or usable (health checks)."""
        ...


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
