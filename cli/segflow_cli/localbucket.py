"""A bucket as a directory: `<root>/<bucket>/<key>`, for `segflow run`, `segflow invoke` and the tests.

`LocalBuckets(root)` is the storage factory the local tools hand the services through `Deps` (the layer
itself only knows OSS). Several processes may share one directory (`segflow invoke` in two terminals, the
collector and the upload handler), so every OS-level race ends the way OSS would answer (`_publish`,
`_os_error`): no bare `OSError` leaves this module.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.storage.base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PART_SIZE,
    ObjectInfo,
    Storage,
    check_range,
)
from segflow_cli.bucketpaths import BUCKET_NAME, MAX_NAME_BYTES, check_bucket, object_path
from segflow_cli.presign import LocalPresignServer, Presigner

__all__ = ["LocalBuckets", "LocalDirStorage", "LocalPresignServer", "Presigner"]

_TMP_DIR = ".segflow-tmp"
_COPY_CHUNK = 1024 * 1024
_WRITE_ATTEMPTS = 50
"""Tries of one write whose folder another process's `delete` keeps removing; each try is two system calls,
so this bounds a pathological loop, not a real race (which the second try wins)."""
_GONE = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
"""What the OS says when the object (or a folder on its path) is not there, or the key names a folder."""


def _os_error(exc: OSError, what: str) -> StorageError:
    """An OS failure as the storage error OSS answers with for the same situation."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorageError(f"{what}: {reason}", code="AccessDenied", http_status=403)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"{what}: {reason}", code="InsufficientStorage", http_status=507)
    if exc.errno == errno.ENAMETOOLONG:
        return StorageError(f"{what}: {reason}", code="InvalidObjectName", http_status=400)
    return StorageError(f"{what}: {reason}", code="InternalError", http_status=500)


class LocalDirStorage(Storage):
    """One bucket under `root`. `presign_base_url`, when given, is used as is (`<base>/<bucket>/<key>`,
    unsigned) for a directory something else already serves; otherwise URLs come from `presign_server`
    (default: the process-wide `LocalPresignServer`, started on first use)."""

    def __init__(
        self,
        root: Path,
        bucket: str,
        presign_base_url: str | None = None,
        *,
        presign_server: Presigner | None = None,
    ) -> None:
        check_bucket(bucket)
        self.root = Path(root).resolve()
        self.bucket = bucket
        self.bucket_dir = self.root / bucket
        self.presign_base_url = presign_base_url.rstrip("/") if presign_base_url else None
        self._presign_server = presign_server
        self._etags: dict[Path, tuple[int, int, int, str]] = {}
        self._etag_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        """The file that holds `key`; keys that would leave the bucket directory are refused."""
        return object_path(self.bucket_dir, key)

    def accepts_key(self, key: str) -> bool:
        try:
            self.path_for(key)
        except StorageError:
            return False
        return True

    def _clash(self, key: str) -> StorageError:
        return StorageError(
            f"key {key!r} clashes with another key's directory in {self.bucket_dir}",
            code="InvalidObjectName",
            http_status=400,
        )

    def _blocked_by_file(self, path: Path) -> bool:
        """A folder `path` needs is a file (an object named like a prefix of the key)."""
        for folder in path.parents:
            if folder == self.bucket_dir or self.bucket_dir not in folder.parents:
                return False
            try:
                mode = folder.stat().st_mode  # one look: exists() then is_dir() could straddle a delete
            except OSError:
                continue  # not there (any more): not in the way
            if not stat.S_ISDIR(mode):
                return True
        return False

    # -- reads ---------------------------------------------------------------------------------------
    def _open(self, key: str) -> BinaryIO:
        """The object's file, open: what is read from it stays the same even if it is deleted meanwhile."""
        path = self.path_for(key)
        try:
            return open(path, "rb")  # the callers close it
        except _GONE as exc:
            raise ObjectNotFoundError(f"no object {key!r} in bucket {self.bucket}") from exc
        except OSError as exc:
            raise _os_error(exc, f"reading {self.bucket}/{key}") from exc

    @contextlib.contextmanager
    def _reading(self, key: str, handle: BinaryIO | None = None) -> Iterator[BinaryIO]:
        """The open file of `key` (opened now unless given), closed after; read failures as storage errors."""
        handle = handle or self._open(key)
        try:
            with handle:
                yield handle
        except OSError as exc:
            raise _os_error(exc, f"reading {self.bucket}/{key}") from exc

    def etag_of(self, path: Path, handle: BinaryIO | None = None) -> str:
        """The upper-case MD5 of the file (the ETag OSS gives a simple upload), cached by inode, size and
        mtime (a rename makes a new inode)."""
        if handle is None:
            with open(path, "rb") as opened:
                return self.etag_of(path, opened)
        meta = os.fstat(handle.fileno())
        with self._etag_lock:
            cached = self._etags.get(path)
        if cached and cached[:3] == (meta.st_ino, meta.st_size, meta.st_mtime_ns):
            return cached[3]
        digest = hashlib.md5(usedforsecurity=False)
        handle.seek(0)
        while block := handle.read(_COPY_CHUNK):
            digest.update(block)
        etag = digest.hexdigest().upper()
        with self._etag_lock:
            self._etags[path] = (meta.st_ino, meta.st_size, meta.st_mtime_ns, etag)
        return etag

    def head(self, key: str) -> ObjectInfo:
        with self._reading(key) as handle:
            meta = os.fstat(handle.fileno())
            etag = self.etag_of(self.path_for(key), handle)
        return ObjectInfo(key=key, size=meta.st_size, etag=etag, last_modified=meta.st_mtime)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        with self._reading(key) as handle:
            handle.seek(offset)
            return handle.read(length)

    def get_bytes(self, key: str) -> bytes:
        with self._reading(key) as handle:
            return handle.read()

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        handle = self._open(key)  # raised by the call, not by the first next()

        def chunks() -> Iterator[bytes]:
            with self._reading(key, handle):
                while block := handle.read(chunk_size):
                    yield block

        return chunks()

    # -- writes --------------------------------------------------------------------------------------
    def _tmp_file(self, key: str) -> tuple[int, Path]:
        tmp_dir = self.root / _TMP_DIR
        for _ in range(_WRITE_ATTEMPTS):
            try:
                tmp_dir.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=f"{self.bucket}-")
                return fd, Path(name)
            except FileNotFoundError:
                continue  # the temporary folder (or the root) was removed meanwhile: make it again
            except OSError as exc:
                raise _os_error(exc, f"writing {self.bucket}/{key}") from exc
        raise self._busy(key)

    def _busy(self, key: str) -> StorageError:
        return StorageError(
            f"writing {self.bucket}/{key}: its folder was removed {_WRITE_ATTEMPTS} times in a row by "
            "another process",
            code="ServiceUnavailable",
            http_status=503,
        )

    def _write_tmp(self, key: str, chunks: Iterable[bytes]) -> tuple[Path, str]:
        fd, tmp = self._tmp_file(key)
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:  # the source's own errors pass through as they are
                    digest.update(chunk)
                    try:
                        handle.write(chunk)
                    except OSError as exc:
                        raise _os_error(exc, f"writing {self.bucket}/{key}") from exc
                try:
                    handle.flush()
                    os.fsync(handle.fileno())
                except OSError as exc:
                    raise _os_error(exc, f"writing {self.bucket}/{key}") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise
        return tmp, digest.hexdigest().upper()

    def _place(self, tmp: Path, path: Path, key: str, *, if_absent: bool) -> bool:
        """One try at giving the temporary file its name; False when a folder vanished under it."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
            if self._blocked_by_file(path):
                raise self._clash(key) from exc
            return False  # made, then removed by another process's delete before we got further
        except OSError as exc:
            raise _os_error(exc, f"writing {self.bucket}/{key}") from exc
        if path.is_dir():
            raise self._clash(key)
        try:
            if if_absent:
                os.link(tmp, path)  # atomic: fails if the name exists, never half-written
            else:
                tmp.replace(path)
        except FileExistsError as exc:
            if path.is_dir():
                raise self._clash(key) from exc
            raise ObjectExistsError(f"object {key!r} already exists in bucket {self.bucket}") from exc
        except _GONE as exc:
            if path.is_dir() or self._blocked_by_file(path):
                raise self._clash(key) from exc
            if not tmp.exists():
                raise _os_error(exc, f"writing {self.bucket}/{key} (its temporary file vanished)") from exc
            return False
        except OSError as exc:
            raise _os_error(exc, f"writing {self.bucket}/{key}") from exc
        return True

    def _publish(self, tmp: Path, key: str, etag: str, *, if_absent: bool) -> str:
        """Gives the temporary file (under `<root>/.segflow-tmp/`) its key: a rename, or for put-if-absent
        a hard link, which fails if the name exists; both atomic. A write whose folder another process's
        `delete` removed makes the folder again and retries, `_WRITE_ATTEMPTS` times at most."""
        try:
            path = self.path_for(key)
            try:
                meta = tmp.stat()  # a rename or link keeps the inode: this is the object's identity
            except OSError as exc:
                raise _os_error(exc, f"writing {self.bucket}/{key}") from exc
            if not any(self._place(tmp, path, key, if_absent=if_absent) for _ in range(_WRITE_ATTEMPTS)):
                raise self._busy(key)
            with self._etag_lock:
                self._etags[path] = (meta.st_ino, meta.st_size, meta.st_mtime_ns, etag)
            return etag
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        self.path_for(key)
        tmp, etag = self._write_tmp(key, [data])
        return self._publish(tmp, key, etag, if_absent=if_absent)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        self.path_for(key)
        tmp, etag = self._write_tmp(key, chunks)
        return self._publish(tmp, key, etag, if_absent=False)

    # -- listing and deletion ------------------------------------------------------------------------
    def _keys_under(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names, so listing `segflow-jobs/pending/` never
        # visits finished records.
        directory, _, _ = prefix.rpartition("/")
        parts = directory.split("/")
        unholdable = any(len(part.encode("utf-8")) > MAX_NAME_BYTES or "\x00" in part for part in parts)
        if directory and (unholdable or any(part in ("", ".", "..") for part in parts)):
            return []  # no stored key can start so: an empty listing, as OSS gives for any unmatched prefix
        start = self.bucket_dir.joinpath(*directory.split("/")) if directory else self.bucket_dir

        def failed(exc: OSError) -> None:
            # A folder removed while walking (or a path too long to exist) holds no keys.
            if not (isinstance(exc, _GONE) or exc.errno == errno.ENAMETOOLONG):
                raise _os_error(exc, f"listing {self.bucket}/{prefix}") from exc

        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start, onerror=failed):
            rel = Path(dirpath).relative_to(self.bucket_dir).as_posix()
            base = "" if rel == "." else rel + "/"
            keys.extend(base + name for name in filenames if (base + name).startswith(prefix))
        return keys

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        if page_size <= 0:
            raise ValueError("page_size must be > 0")
        # Python orders str by code point, which is the UTF-8 byte order OSS lists in.
        keys = sorted(k for k in self._keys_under(prefix) if k > start_after)

        def pages() -> Iterator[ObjectInfo]:
            for first in range(0, len(keys), page_size):
                for key in keys[first : first + page_size]:
                    with contextlib.suppress(ObjectNotFoundError):  # deleted since the walk
                        yield self.head(key)

        return pages()

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        try:
            path.unlink()
        except OSError as exc:
            # Not there (or a folder of other keys, which no object of this name is): done, as on OSS.
            if not (isinstance(exc, _GONE) or path.is_dir()):
                raise _os_error(exc, f"deleting {self.bucket}/{key}") from exc
        with self._etag_lock:
            self._etags.pop(path, None)
        # Drop directories left empty, so listings of pending records stay cheap.
        parent = path.parent
        while parent != self.bucket_dir and self.bucket_dir in parent.parents:
            try:
                parent.rmdir()
            except OSError:  # not empty, or already removed by another process
                break
            parent = parent.parent

    # -- presigned URLs ------------------------------------------------------------------------------
    def presign_get(self, key: str, expires_seconds: int) -> str:
        """A loopback URL, HMAC-signed and expiring like an OSS presigned URL (`segflow_cli.presign`), so the
        local engine fetches inputs over HTTP exactly as the real service fetches from OSS."""
        self.path_for(key)
        if self.presign_base_url:
            return f"{self.presign_base_url}/{self.bucket}/{quote(key, safe='/')}"
        server = self._presign_server or LocalPresignServer.shared()
        return server.presign(self.root, self.bucket, key, expires_seconds)


class LocalBuckets:
    """The `Deps.storage_for` of local runs: one `LocalDirStorage` per bucket directory under `root`.

    `presign_server` signs the URLs of every bucket (default: the in-process `LocalPresignServer`;
    `segflow invoke` passes the background server of `segflow_cli.urlserver`)."""

    def __init__(self, root: Path, *, presign_server: Presigner | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self._presign_server = presign_server
        self._storages: dict[str, LocalDirStorage] = {}
        self._lock = threading.Lock()

    def __call__(self, bucket: str, region: str | None = None) -> LocalDirStorage:
        with self._lock:
            storage = self._storages.get(bucket)
            if storage is None:
                storage = LocalDirStorage(self.root, bucket, presign_server=self._presign_server)
                self._storages[bucket] = storage
            return storage

    def existing(self, bucket: str) -> LocalDirStorage:
        """The storage of a bucket that must already exist, for tools that only read (a missing directory
        would otherwise list as an empty bucket). Refused as OSS refuses: `NoSuchBucket` (404) for no
        directory, `AccessDenied` (403) for one this user cannot list."""
        storage = self(bucket)
        if not storage.bucket_dir.is_dir():
            raise ObjectNotFoundError(
                f"no bucket {bucket} under {self.root}", code="NoSuchBucket", http_status=404
            )
        if not os.access(storage.bucket_dir, os.R_OK | os.X_OK):
            raise StorageError(
                f"cannot list {storage.bucket_dir}: permission denied", code="AccessDenied", http_status=403
            )
        return storage

    def names(self) -> tuple[str, ...]:
        """The buckets that exist (directories with a valid bucket name), for the collector to scan."""
        try:
            entries = list(self.root.iterdir())
        except _GONE:
            return ()
        except OSError as exc:
            raise _os_error(exc, f"listing the buckets in {self.root}") from exc
        return tuple(sorted(p.name for p in entries if p.is_dir() and BUCKET_NAME.match(p.name)))
