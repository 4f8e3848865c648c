"""The storage port: one bucket of objects, as the services see it.

Two adapters implement it and pass the same contract suite (`tests/support/storage_contract.py`):
`LocalDirStorage` (a directory per bucket, for local runs and tests) and `OssStorage` (oss2).
Keys are OSS object keys: already decoded, any Unicode, `/` separates nothing but is kept as is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from typing import TypeAlias

from segflow.errors import StorageError
from segflow.logs import printable
from segflow.values import Value

ReadAt: TypeAlias = "Callable[[int, int], bytes]"  # quoted: typing builds nothing at import
"""read_at(offset, length) -> up to `length` bytes starting at `offset` (fewer at the end of the object)."""

DEFAULT_PART_SIZE = 8 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 1024 * 1024


class ObjectInfo(Value):
    """What a HEAD or a listing tells about one object."""

    key: str
    size: int
    etag: str
    """Upper-case hex as OSS gives it, without quotes (multipart objects: `<hex>-<parts>`)."""
    last_modified: float | None = None
    """Seconds since the epoch, when the store tells."""


MAX_KEY_BYTES = 1023


def key_problem(key: str) -> str | None:
    """Why OSS would refuse `key` as an object name (OSS "Object naming conventions": UTF-8, 1 to 1023
    bytes, no leading `/` or `\\`; NUL ends a C string in every SDK), or None for a key it accepts."""
    if not key:
        return "it is empty"
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not UTF-8 text (it holds a lone surrogate)"
    if size > MAX_KEY_BYTES:
        return f"it is {size} bytes long (at most {MAX_KEY_BYTES})"
    if "\x00" in key:
        return "it holds a NUL character"
    if key.startswith(("/", "\\")):
        return "it starts with / or \\"
    return None


def check_key(key: str) -> str:
    """Refuse keys OSS itself refuses (`key_problem`) with OSS's own code."""
    problem = key_problem(key)
    if problem is not None:
        raise StorageError(
            f"invalid object key {printable(key, 200)!r}: {problem}",
            code="InvalidObjectName",
            http_status=400,
        )
    return key


def check_range(offset: int, length: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"offset and length must be >= 0 (got {offset}, {length})")


class Storage(ABC):
    """One bucket. Every method raises `StorageError` (or a subclass) for storage failures."""

    bucket: str

    def accepts_key(self, key: str) -> bool:
        """Whether this store can hold an object named `key` (OSS: 1 to 1023 UTF-8 bytes, no leading
        `/` or `\\`); an adapter with stricter rules says so here, so derived keys are checked before
        anything is paid for."""
        try:
            check_key(key)
        except StorageError:
            return False
        return True

    @abstractmethod
    def head(self, key: str) -> ObjectInfo:
        """Size and ETag of `key`; `ObjectNotFoundError` if it does not exist."""

    @abstractmethod
    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Up to `length` bytes from `offset`; fewer at the end, `b""` past it; `ObjectNotFoundError`."""

    def reader(self, key: str) -> ReadAt:
        """A `read_at` bound to `key`, for probing media with ranged reads instead of a download."""

        def read_at(offset: int, length: int) -> bytes:
            return self.read_range(key, offset, length)

        return read_at

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object (small objects only: manifests, job records)."""

    @abstractmethod
    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        """The object as chunks of at most `chunk_size` bytes. `ObjectNotFoundError` is raised by this
        call, not by the first `next()`."""

    @abstractmethod
    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        """Store `data` under `key` atomically and return the ETag. With `if_absent` an existing object is
        left alone and `ObjectExistsError` is raised (OSS: `x-oss-forbid-overwrite: true`)."""

    @abstractmethod
    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        """Store a stream of unknown length, holding at most about one part in memory (multipart upload
        once it outgrows one part). Returns the ETag; nothing is visible under `key` until it completes."""

    @abstractmethod
    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Objects whose key starts with `prefix` and sorts after `start_after`, in key order, fetched a page
        of `page_size` at a time (stop iterating and nothing more is fetched)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing object is not an error (as in OSS)."""

    @abstractmethod
    def presign_get(self, key: str, expires_seconds: int) -> str:
        """A URL anyone can GET (with Range) for `expires_seconds`; what the vision API is given."""
