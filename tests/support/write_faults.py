"""A Storage wrapper that injects failures into writes, for the fault tests.

`WriteFaults` delegates every call to `inner`; before each write (put_bytes, put_stream, delete) it asks
`should_fail(description, body)` and, if so, raises `injected_error()` — for put_stream after the first
chunk was consumed, i.e. mid-upload. Subclasses decide which writes fail and with what.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from segflow.storage.base import DEFAULT_CHUNK_SIZE, DEFAULT_PART_SIZE, ObjectInfo, Storage


class WriteFaults(Storage):
    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.bucket = inner.bucket

    def should_fail(self, what: str, data: bytes | None) -> bool:
        """Whether the write described by `what` ("put_bytes <key>", …) fails; counts as one write."""
        raise NotImplementedError

    def injected_error(self) -> BaseException:
        raise NotImplementedError

    def head(self, key: str) -> ObjectInfo:
        return self.inner.head(key)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.read_range(key, offset, length)

    def get_bytes(self, key: str) -> bytes:
        return self.inner.get_bytes(key)

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        return self.inner.open_stream(key, chunk_size)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        if self.should_fail(f"put_bytes {key}", data):
            raise self.injected_error()
        return self.inner.put_bytes(key, data, content_type=content_type, if_absent=if_absent)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        if self.should_fail(f"put_stream {key}", None):

            def broken() -> Iterator[bytes]:
                iterator = iter(chunks)
                yield next(iterator)
                raise self.injected_error()

            return self.inner.put_stream(key, broken(), content_type=content_type, part_size=part_size)
        return self.inner.put_stream(key, chunks, content_type=content_type, part_size=part_size)

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix, start_after=start_after, page_size=page_size)

    def delete(self, key: str) -> None:
        if self.should_fail(f"delete {key}", None):
            raise self.injected_error()
        self.inner.delete(key)

    def presign_get(self, key: str, expires_seconds: int) -> str:
        return self.inner.presign_get(key, expires_seconds)
