"""An in-memory `Storage` for unit tests of the services (no disk, no network), thread-safe.

It counts writes per key so tests can prove that something was written exactly once.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator

from segflow.errors import ObjectExistsError, ObjectNotFoundError
from segflow.storage.base import DEFAULT_CHUNK_SIZE, DEFAULT_PART_SIZE, ObjectInfo, Storage, check_key


class MemoryStorage(Storage):
    def __init__(self, bucket: str = "segflow-demo") -> None:
        self.bucket = bucket
        self.objects: dict[str, bytes] = {}
        self.writes: Counter[str] = Counter()
        self._lock = threading.Lock()

    def head(self, key: str) -> ObjectInfo:
        with self._lock:
            data = self.objects.get(key)
        if data is None:
            raise ObjectNotFoundError(f"no such key {key!r}")
        return ObjectInfo(key=key, size=len(data), etag=hashlib.md5(data).hexdigest().upper())

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self.get_bytes(key)[offset : offset + length]

    def get_bytes(self, key: str) -> bytes:
        with self._lock:
            data = self.objects.get(key)
        if data is None:
            raise ObjectNotFoundError(f"no such key {key!r}")
        return data

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        data = self.get_bytes(key)
        return iter([data[i : i + chunk_size] for i in range(0, len(data), chunk_size)] or [b""])

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        check_key(key)
        with self._lock:
            if if_absent and key in self.objects:
                raise ObjectExistsError(f"{key!r} exists")
            self.objects[key] = bytes(data)
            self.writes[key] += 1
        return hashlib.md5(data).hexdigest().upper()

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        return self.put_bytes(key, b"".join(chunks), content_type=content_type)

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        with self._lock:
            keys = sorted(k for k in self.objects if k.startswith(prefix) and k > start_after)
        for key in keys:
            try:
                yield self.head(key)
            except ObjectNotFoundError:
                continue

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return f"memory://{self.bucket}/{key}?expires={expires_seconds}"

    def keys(self, prefix: str = "") -> builtins.list[str]:
        with self._lock:
            return sorted(k for k in self.objects if k.startswith(prefix))
