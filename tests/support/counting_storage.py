"""A `Storage` wrapper that counts the requests a caller makes, as OSS would bill and throttle them.

Every read (`head`, `get_bytes`, `read_range`, `open_stream`) is one request; a listing is one request per
page it fetched: the first page when iteration starts, one more each time the caller reads past a full
page (OSS ListObjectsV2 answers `IsTruncated=false` on the last page, so n keys cost ceil(n / page size)
requests, and an empty listing one). Writes are counted too, so a read-only tool can prove it wrote nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from segflow.storage.base import DEFAULT_CHUNK_SIZE, DEFAULT_PART_SIZE, ObjectInfo, Storage


class CountingStorage(Storage):
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.bucket = inner.bucket
        self.calls: Counter[str] = Counter()
        self.pages: Counter[str] = Counter()
        """Listing requests per prefix."""
        self.reads: list[str] = []
        self.log: list[tuple[str, str]] = []
        """(method, key or prefix) of every request, in order."""

    @property
    def requests(self) -> int:
        return sum(self.pages.values()) + len(self.reads) + self.writes

    @property
    def writes(self) -> int:
        return sum(self.calls[name] for name in ("put_bytes", "put_stream", "delete"))

    def accepts_key(self, key: str) -> bool:
        return self.inner.accepts_key(key)

    def head(self, key: str) -> ObjectInfo:
        self.reads.append(key)
        self.log.append(("head", key))
        return self.inner.head(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.reads.append(key)
        self.log.append(("read_range", key))
        return self.inner.read_range(key, offset, length)

    def get_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        self.log.append(("get_bytes", key))
        return self.inner.get_bytes(key)

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        self.reads.append(key)
        self.log.append(("open_stream", key))
        return self.inner.open_stream(key, chunk_size)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        self.calls["put_bytes"] += 1
        self.log.append(("put_bytes", key))
        return self.inner.put_bytes(key, data, content_type=content_type, if_absent=if_absent)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        self.calls["put_stream"] += 1
        self.log.append(("put_stream", key))
        return self.inner.put_stream(key, chunks, content_type=content_type, part_size=part_size)

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        self.calls["list"] += 1
        inner = self.inner.list(prefix, start_after=start_after, page_size=page_size)

        def pages() -> Iterator[ObjectInfo]:
            self.pages[prefix] += 1
            self.log.append(("list", prefix))
            for index, info in enumerate(inner):
                if index and index % page_size == 0:
                    self.pages[prefix] += 1
                    self.log.append(("list", prefix))
                yield info

        return pages()

    def delete(self, key: str) -> None:
        self.calls["delete"] += 1
        self.log.append(("delete", key))
        self.inner.delete(key)

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return self.inner.presign_get(key, expires_seconds)
