"""Filesystem image store: for single-host setups and tests without an S3 endpoint."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from storage.base import StorageError

# Errors worth a retry: the disk may drain or the device recover; everything else is a bug
# or a permission problem that retrying will not fix.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EDQUOT})
# Empty (leading "/" or "//"), current and parent segments never name a file under the root.
_BAD_SEGMENTS = frozenset({"", ".", ".."})


class LocalImageStore:
    """Writes each object to root/key atomically; URLs are BASE_URL/key or file:// URIs."""

    name = "local"

    def __init__(self, root: Path, base_url: str | None = None) -> None:
        self.root = Path(os.path.realpath(root))
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"LocalImageStore(root={str(self.root)!r}, base_url={self.base_url!r})"

    def path_for(self, key: str) -> Path:
        """Return the file for `key`, refusing keys that could land outside the root."""
        # Check the raw segments: Path() would silently fold "a/./b" or "a//b" into "a/b", and
        # an S3 store would keep them as distinct keys.
        parts = key.split("/")
        if "\\" in key or "\0" in key or any(part in _BAD_SEGMENTS for part in parts):
            raise StorageError(f"unsafe storage key {key!r}", retryable=False, code="invalid_key")
        target = os.path.realpath(self.root.joinpath(*parts))
        # realpath resolves symlinks inside the root too, so a planted link cannot escape.
        if os.path.commonpath([self.root, target]) != str(self.root) or target == str(self.root):
            raise StorageError(f"storage key {key!r} escapes the root", retryable=False)
        return Path(target)

    def put(self, key: str, data: bytes, content_type: str = "image/png") -> str:
        """Write `data` to root/key via a temp file + os.replace, so readers never see halves."""
        target = self.path_for(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._write_atomically(target, data)
        except OSError as exc:
            raise _wrap(exc, f"write {key!r}") from None
        return self.url_for(key)

    @staticmethod
    def _write_atomically(target: Path, data: bytes) -> None:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def url_for(self, key: str) -> str:
        """BASE_URL/key when set, else the file's file:// URI."""
        target = self.path_for(key)
        if self.base_url:
            return self.base_url.rstrip("/") + "/" + key
        return target.as_uri()

    def check(self) -> None:
        """Raise StorageError unless the root exists (or can be made) and is writable."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _wrap(exc, "create root") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageError(f"image root {self.root} is not writable", retryable=False)


def _wrap(exc: OSError, action: str) -> StorageError:
    retryable = exc.errno in _TRANSIENT_ERRNOS
    code = errno.errorcode.get(exc.errno or 0, "OSError")
    return StorageError(f"local {action} failed: {exc.strerror}", retryable=retryable, code=code)
