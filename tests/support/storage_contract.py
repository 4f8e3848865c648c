"""The contract every `Storage` adapter passes: one suite, run against each adapter.

Use it by subclassing `StorageContract` in a test module and providing two fixtures:
`storage` (an empty bucket) and `fetch_presigned` (a callable `url -> bytes` that GETs a presigned URL
the way the vision service would, raising on refusal).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import pytest

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.storage.base import Storage

AWKWARD_KEYS = [
    "incoming/plain.png",
    "incoming/猫咪 照片.jpg",  # Chinese and a space
    "incoming/a+b.png",  # a literal plus, never a space
    "incoming/100%25 off.png",  # a literal %25, never decoded
    "incoming/50%.png",
    "incoming/deep/er/still/x.mp4",
    "incoming/quote'and(paren)&amp=.png",
]

PART = 100 * 1024  # the OSS minimum part size; the suite uses it to force several parts


def md5_upper(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def payload(size: int, seed: int = 7) -> bytes:
    """Deterministic bytes that are not all alike, so a misplaced range shows."""
    return bytes((i * 31 + seed) % 251 for i in range(size))


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


class StorageContract:
    """GIVEN an empty bucket of the adapter under test, each test checks one promise of the port."""

    # -- head / etag -------------------------------------------------------------------------------
    def test_put_returns_md5_etag_and_head_agrees(self, storage: Storage) -> None:
        data = payload(1000)
        etag = storage.put_bytes("incoming/a.png", data, content_type="image/png")
        info = storage.head("incoming/a.png")
        assert etag == md5_upper(data)
        assert (info.key, info.size, info.etag) == ("incoming/a.png", 1000, etag)

    @pytest.mark.parametrize("key", AWKWARD_KEYS)
    def test_awkward_keys_round_trip_unchanged(self, storage: Storage, key: str) -> None:
        storage.put_bytes(key, key.encode())
        assert storage.get_bytes(key) == key.encode()
        assert [info.key for info in storage.list("incoming/")] == [key]

    def test_missing_object_raises_not_found_on_every_read(self, storage: Storage) -> None:
        with pytest.raises(ObjectNotFoundError):
            storage.head("incoming/missing.png")
        with pytest.raises(ObjectNotFoundError):
            storage.get_bytes("incoming/missing.png")
        with pytest.raises(ObjectNotFoundError):
            storage.read_range("incoming/missing.png", 0, 10)
        with pytest.raises(ObjectNotFoundError):
            storage.open_stream("incoming/missing.png")  # raised by the call, not by next()

    def test_empty_key_is_refused(self, storage: Storage) -> None:
        with pytest.raises(StorageError) as caught:
            storage.put_bytes("", b"x")
        assert caught.value.code == "InvalidObjectName"

    # -- ranged reads --------------------------------------------------------------------------------
    @pytest.mark.parametrize(
        ("offset", "length", "expected_slice"),
        [
            (0, 10, slice(0, 10)),
            (100, 50, slice(100, 150)),
            (990, 50, slice(990, 1000)),  # reaches past the end: fewer bytes, not the whole object
            (1000, 10, slice(0, 0)),  # starts at the end
            (5000, 10, slice(0, 0)),  # starts past the end
            (10, 0, slice(0, 0)),
        ],
    )
    def test_read_range_returns_exactly_the_bytes_asked_for(
        self, storage: Storage, offset: int, length: int, expected_slice: slice
    ) -> None:
        data = payload(1000)
        storage.put_bytes("incoming/v.mp4", data)
        assert storage.read_range("incoming/v.mp4", offset, length) == data[expected_slice]

    def test_reader_is_read_range_bound_to_the_key(self, storage: Storage) -> None:
        data = payload(300)
        storage.put_bytes("incoming/v.mp4", data)
        read_at = storage.reader("incoming/v.mp4")
        assert read_at(0, 4) + read_at(4, 1000) == data

    def test_negative_range_is_a_programming_error(self, storage: Storage) -> None:
        storage.put_bytes("incoming/v.mp4", b"abc")
        with pytest.raises(ValueError):
            storage.read_range("incoming/v.mp4", -1, 2)

    def test_open_stream_yields_chunks_no_larger_than_asked(self, storage: Storage) -> None:
        data = payload(10_000)
        storage.put_bytes("incoming/v.mp4", data)
        chunks = list(storage.open_stream("incoming/v.mp4", chunk_size=4096))
        assert b"".join(chunks) == data
        assert max(len(chunk) for chunk in chunks) <= 4096
        assert len(chunks) >= 3

    # -- writes --------------------------------------------------------------------------------------
    def test_put_overwrites_by_default(self, storage: Storage) -> None:
        storage.put_bytes("segmented/m.json", b"old")
        storage.put_bytes("segmented/m.json", b"new")
        assert storage.get_bytes("segmented/m.json") == b"new"

    def test_put_if_absent_refuses_an_existing_object_and_keeps_it(self, storage: Storage) -> None:
        storage.put_bytes("segflow-jobs/r.json", b"first", if_absent=True)
        with pytest.raises(ObjectExistsError) as caught:
            storage.put_bytes("segflow-jobs/r.json", b"second", if_absent=True)
        assert caught.value.code == "FileAlreadyExists"
        assert storage.get_bytes("segflow-jobs/r.json") == b"first"

    def test_put_stream_small_and_large_store_every_byte(self, storage: Storage) -> None:
        small = payload(1000, seed=1)
        large = payload(3 * PART + 12_345, seed=2)
        etag_small = storage.put_stream("segmented/s.bin", chunked(small, 333), part_size=PART)
        etag_large = storage.put_stream("segmented/l.bin", chunked(large, 40_000), part_size=PART)
        assert storage.get_bytes("segmented/s.bin") == small
        assert storage.get_bytes("segmented/l.bin") == large
        assert storage.head("segmented/s.bin").etag == etag_small
        assert storage.head("segmented/l.bin").etag == etag_large
        assert storage.head("segmented/l.bin").size == len(large)

    def test_failed_stream_leaves_nothing_under_the_key(self, storage: Storage) -> None:
        def broken() -> Iterator[bytes]:
            yield payload(PART)
            yield payload(PART)
            raise ConnectionError("result download broke")

        with pytest.raises(ConnectionError):
            storage.put_stream("segmented/broken.mp4", broken(), part_size=PART)
        with pytest.raises(ObjectNotFoundError):
            storage.head("segmented/broken.mp4")

    def test_empty_stream_stores_an_empty_object(self, storage: Storage) -> None:
        storage.put_stream("segmented/empty.bin", iter(()), part_size=PART)
        assert storage.head("segmented/empty.bin").size == 0

    # -- listing -------------------------------------------------------------------------------------
    def test_list_pages_through_everything_in_key_order(self, storage: Storage) -> None:
        keys = [f"segflow-jobs/pending/{i:03d}.json" for i in range(7)]
        for key in reversed(keys):
            storage.put_bytes(key, b"{}")
        storage.put_bytes("segflow-jobs/done/000.json", b"{}")
        storage.put_bytes("incoming/x.png", b"x")
        listed = [info.key for info in storage.list("segflow-jobs/pending/", page_size=3)]
        assert listed == keys

    def test_list_starts_after_the_given_key(self, storage: Storage) -> None:
        for name in ("a", "b", "c", "d"):
            storage.put_bytes(f"incoming/{name}.png", b"x")
        listed = [info.key for info in storage.list("incoming/", start_after="incoming/b.png", page_size=1)]
        assert listed == ["incoming/c.png", "incoming/d.png"]

    def test_list_prefix_need_not_end_at_a_slash(self, storage: Storage) -> None:
        for key in ("incoming/cat.png", "incoming/car.png", "incoming/dog.png"):
            storage.put_bytes(key, b"x")
        assert [info.key for info in storage.list("incoming/ca")] == ["incoming/car.png", "incoming/cat.png"]

    def test_list_reports_size_and_etag(self, storage: Storage) -> None:
        storage.put_bytes("incoming/a.png", b"12345")
        (info,) = storage.list("incoming/")
        assert (info.size, info.etag) == (5, md5_upper(b"12345"))

    def test_list_of_an_unknown_prefix_is_empty(self, storage: Storage) -> None:
        assert list(storage.list("nothing-here/")) == []

    # -- delete --------------------------------------------------------------------------------------
    def test_delete_removes_and_tolerates_missing(self, storage: Storage) -> None:
        storage.put_bytes("segflow-jobs/pending/a.json", b"{}")
        storage.delete("segflow-jobs/pending/a.json")
        storage.delete("segflow-jobs/pending/a.json")
        with pytest.raises(ObjectNotFoundError):
            storage.head("segflow-jobs/pending/a.json")
        assert list(storage.list("segflow-jobs/")) == []

    # -- presign -------------------------------------------------------------------------------------
    @pytest.mark.parametrize("key", ["incoming/plain.png", "incoming/猫咪 照片+1 100%25.jpg"])
    def test_presigned_url_serves_the_object(
        self, storage: Storage, fetch_presigned: Callable[[str], bytes], key: str
    ) -> None:
        data = payload(2048)
        storage.put_bytes(key, data)
        url = storage.presign_get(key, 600)
        assert "Signature=" in url and "Expires=" in url
        assert fetch_presigned(url) == data
