"""Filesystem image store: for single-host setups and tests without an S3 endpoint.

Metadata lives in a sidecar file next to the object, `<file>.meta.json` (sorted JSON), so it needs
no extended attributes from the filesystem; keys ending in ".meta.json" are refused so that no
object can alias a sidecar.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path

from storage.base import AlreadyStored, StorageError, check_metadata

# Errors worth a retry: the disk may drain or the device recover; everything else is a bug
# or a permission problem that retrying will not fix.
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.EDQUOT})
# Empty (leading "/" or "//"), current and parent segments never name a file under the root.
_BAD_SEGMENTS = frozenset({"", ".", ".."})
# What S3 would answer NoSuchKey for: no file there, or a "directory" key (a prefix of other keys).
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EISDIR})
SIDECAR_SUFFIX = ".meta.json"


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
        unsafe = "\\" in key or "\0" in key or key.endswith(SIDECAR_SUFFIX)
        if unsafe or any(part in _BAD_SEGMENTS for part in parts):
            raise StorageError(f"unsafe storage key {key!r}", retryable=False, code="invalid_key")
        target = os.path.realpath(self.root.joinpath(*parts))
        # realpath resolves symlinks inside the root too, so a planted link cannot escape.
        if os.path.commonpath([self.root, target]) != str(self.root) or target == str(self.root):
            raise StorageError(f"storage key {key!r} escapes the root", retryable=False)
        return Path(target)

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """Write `data` to root/key via a temp file + os.replace, so readers never see halves.

        The old sidecar goes first and the new one comes last: a crash in between leaves an
        object without metadata (which `head` reports as {}), never new data under old metadata.
        """
        check_metadata(metadata)
        target = self.path_for(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _sidecar(target).unlink(missing_ok=True)
            self._write_atomically(target, data)
            if metadata:
                text = json.dumps(metadata, sort_keys=True).encode()
                self._write_atomically(_sidecar(target), text)
        except OSError as exc:
            raise _wrap(exc, f"write {key!r}") from None
        return self.url_for(key)

    def create(
        self,
        key: str,
        data: bytes,
        content_type: str = "image/png",
        metadata: dict[str, str] | None = None,
    ) -> str:
        """`put` when no file is at root/key: the data is written to a temporary file and linked
        into place, which fails (AlreadyStored) when the name is taken, atomically."""
        check_metadata(metadata)
        target = self.path_for(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._write_atomically(target, data, claim=True)
            if metadata:  # a reader in between sees {}: an object that vouches for nothing
                text = json.dumps(metadata, sort_keys=True).encode()
                self._write_atomically(_sidecar(target), text)
        except FileExistsError:
            raise AlreadyStored(key) from None
        except OSError as exc:
            raise _wrap(exc, f"create {key!r}") from None
        return self.url_for(key)

    def get(self, key: str) -> bytes | None:
        """The file's bytes, or None when there is no file at root/key."""
        target = self.path_for(key)
        try:
            return target.read_bytes()
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return None
            raise _wrap(exc, f"read {key!r}") from None

    def get_prefix(self, key: str, limit: int) -> bytes | None:
        """The file's first `limit` + 1 bytes at most (more than `limit`: it is larger), or
        None when there is no file at root/key."""
        target = self.path_for(key)
        try:
            with target.open("rb") as file:
                return file.read(limit + 1)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return None
            raise _wrap(exc, f"read {key!r}") from None

    def head(self, key: str) -> dict[str, str] | None:
        """The sidecar's metadata ({} without one), or None when there is no file at root/key."""
        target = self.path_for(key)
        if not self._is_file(target, key):
            return None
        try:
            raw = _sidecar(target).read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise _wrap(exc, f"head {key!r}") from None
        return _parse_sidecar(raw)

    @staticmethod
    def _is_file(target: Path, key: str) -> bool:
        try:
            return stat.S_ISREG(target.stat().st_mode)
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return False
            raise _wrap(exc, f"head {key!r}") from None

    def delete(self, key: str) -> None:
        """Remove the file and its sidecar; a missing file is not an error."""
        target = self.path_for(key)
        try:
            # Sidecar first: a crash in between leaves a file without metadata, not the reverse.
            _sidecar(target).unlink(missing_ok=True)
            target.unlink()
        except OSError as exc:
            if exc.errno not in _MISSING_ERRNOS:
                raise _wrap(exc, f"delete {key!r}") from None

    def keys_in(self, folder: str, limit: int) -> list[str]:
        """The files in root/folder (not sidecars, not temp files of writes in progress)."""
        folder = folder.rstrip("/")
        directory = self.path_for(folder)
        try:
            names = sorted(entry.name for entry in os.scandir(directory) if entry.is_file())
        except OSError as exc:
            if exc.errno in _MISSING_ERRNOS:
                return []
            raise _wrap(exc, f"list {folder!r}") from None
        keys = [f"{folder}/{name}" for name in names if _is_object_name(name)]
        return keys[:limit]

    @staticmethod
    def _write_atomically(target: Path, data: bytes, claim: bool = False) -> None:
        """`data` in a synced temporary file, then moved into place (os.replace), or with
        `claim` linked into place, which raises FileExistsError when the name is taken."""
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            (os.link if claim else os.replace)(tmp_name, target)
        finally:
            Path(tmp_name).unlink(missing_ok=True)  # gone already after a replace

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


def _is_object_name(name: str) -> bool:
    temporary = name.startswith(".") and name.endswith(".tmp")  # _write_atomically's
    return not temporary and not name.endswith(SIDECAR_SUFFIX)


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + SIDECAR_SUFFIX)


def _parse_sidecar(raw: bytes) -> dict[str, str]:
    # Sidecars are written atomically, so a broken one was edited by hand: report no metadata,
    # which makes callers treat the object as unverified rather than fail.
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(name): str(item) for name, item in value.items()}


def _wrap(exc: OSError, action: str) -> StorageError:
    retryable = exc.errno in _TRANSIENT_ERRNOS
    code = errno.errorcode.get(exc.errno or 0, "OSError")
    return StorageError(f"local {action} failed: {exc.strerror}", retryable=retryable, code=code)
