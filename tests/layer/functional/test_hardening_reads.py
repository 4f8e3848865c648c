"""How much of an upload on_upload reads to validate it (issue 6: ≤ 64 KiB, plus the `moov` box for an MP4
whose `moov` sits at the tail). bench/per_event.py prints the same figure; this keeps it from regressing.

GIVEN a 3 MiB JPEG and a 1 GiB sparse MP4 (real H.264 header, 64-bit mdat, moov at the end) in a local
bucket whose adapter counts every byte read, WHEN the real handler processes their upload events, THEN
the bytes read from the source stay within the budget, to the byte.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from segflow.services.deps import use_handler_deps
from segflow.storage.base import DEFAULT_CHUNK_SIZE, Storage
from segflow_cli.localbucket import LocalDirStorage
from tests.support.fake_api import FakeApi, Reply
from tests.support.media_files import encode_video, sparse_from_real
from tests.support.services_harness import BUCKET, Harness, ResultServer, harness, oss_event

KiB, MiB, GiB = 1024, 1024 * 1024, 1024 * 1024 * 1024
HEAD_BUDGET = 64 * KiB


class CountingStorage(LocalDirStorage):
    """A local bucket that counts the bytes read from objects outside segflow's own prefixes."""

    def __init__(self, root: Path, bucket: str) -> None:
        super().__init__(root, bucket)
        self.read = 0

    def _count(self, key: str, n: int) -> None:
        if key.startswith("incoming/"):
            self.read += n

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        data = super().read_range(key, offset, length)
        self._count(key, len(data))
        return data

    def get_bytes(self, key: str) -> bytes:
        data = super().get_bytes(key)
        self._count(key, len(data))
        return data

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        for chunk in super().open_stream(key, chunk_size):
            self._count(key, len(chunk))
            yield chunk


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[tuple[Harness, CountingStorage]]:
    with FakeApi() as api:
        results = ResultServer()
        try:
            h = harness(tmp_path / "buckets", api, results)
            storage = CountingStorage(tmp_path / "buckets", BUCKET)

            def storage_for(bucket: str, region: str | None = None) -> Storage:
                return storage

            h.deps.storage_for = storage_for
            yield h, storage
        finally:
            use_handler_deps(None)
            results.close()


def photo(size: int) -> bytes:
    """A 1200×1000 noise JPEG with an EXIF-sized APP1 in front, padded after EOI to `size` bytes."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 256, size=(1000, 1200, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85)
    app1 = b"\xff\xe1" + struct.pack(">H", 60 * KiB + 2) + b"Exif\x00\x00" + bytes(60 * KiB - 6)
    data = buffer.getvalue()[:2] + app1 + buffer.getvalue()[2:]
    assert len(data) < size
    return data + bytes(size - len(data))


def moov_size(data: bytes) -> int:
    pos = 0
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        if kind == b"moov":
            return int(size)
        pos += size
    raise AssertionError("no moov")


def test_a_3_mb_jpeg_is_validated_from_its_first_64_kib(counted: tuple[Harness, CountingStorage]) -> None:
    h, storage = counted
    key = "incoming/photos/camera.jpg"
    storage.put_bytes(key, photo(3 * MiB - 1))  # SegmentCommonImage: ≤ 3 MB (VISION-API.md §2)
    assert h.on_upload(oss_event(key))["done"] == 1
    assert 0 < storage.read <= HEAD_BUDGET


def test_a_1_gib_mp4_with_a_tail_moov_is_validated_from_64_kib_plus_the_moov(
    counted: tuple[Harness, CountingStorage],
) -> None:
    h, storage = counted
    key = "incoming/videos/long.mp4"
    real = encode_video("mp4", "libx264", (640, 360), 10)
    sparse = sparse_from_real(real, GiB)  # SegmentVideoBody: ≤ 1 GB (VISION-API.md §3, SegmentVideoBody)
    path = storage.path_for(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for offset, part in sparse.parts.items():
            out.seek(offset)
            out.write(part)
        out.truncate(GiB)
    h.api.queue("SegmentVideoBody", Reply.ok(None, request_id="JOB-READS-1"))  # no 1 GiB fetch by the fake

    assert h.on_upload(oss_event(key))["submitted"] == 1

    assert storage.read <= HEAD_BUDGET + moov_size(real), (storage.read, moov_size(real))
