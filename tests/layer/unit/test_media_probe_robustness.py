"""Mutated and truncated real files: the probe answers or raises MediaError, never anything else."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from segflow.media import HEAD_BYTES, MediaError, probe_media
from tests.support.media_files import (
    cached_video,
    mp4_file,
    pillow_image,
    png,
    reader,
    tiff_big_endian,
)

CORPUS: dict[str, Callable[[], bytes]] = {
    "jpeg": lambda: pillow_image("JPEG", (64, 48)),
    "jpeg-progressive": lambda: pillow_image("JPEG", (64, 48), progressive=True),
    "png": lambda: png(30, 20),
    "gif": lambda: pillow_image("GIF", (20, 20), "P"),
    "bmp": lambda: pillow_image("BMP", (20, 20)),
    "webp-lossy": lambda: pillow_image("WEBP", (20, 20)),
    "webp-lossless-alpha": lambda: pillow_image("WEBP", (20, 20), "RGBA", lossless=True),
    "tiff-le": lambda: pillow_image("TIFF", (20, 20)),
    "tiff-be": lambda: tiff_big_endian(20, 20),
    "mp4": lambda: cached_video("mp4", "libx264", 64, 48, 3),
    "mov": lambda: cached_video("mov", "libx264", 64, 48, 3),
    "mkv": lambda: cached_video("matroska", "libx264", 64, 48, 3),
    "avi": lambda: cached_video("avi", "mpeg4", 64, 48, 3),
    "flv": lambda: cached_video("flv", "flv", 64, 48, 3),
    "ts": lambda: cached_video("mpegts", "libx264", 64, 48, 3),
    "ps-mpeg2": lambda: cached_video("mpeg", "mpeg2video", 64, 48, 3),
    "ps-h264": lambda: cached_video("mpeg", "libx264", 64, 48, 3),
    "mp4-hand-made": lambda: mp4_file(64, 48, 30),
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_mutated_headers_only_ever_raise_media_error(name: str) -> None:
    original = CORPUS[name]()
    rng = random.Random(name)
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(300):
        data = bytearray(original)
        if rng.random() < 0.3:
            data = data[: rng.randint(0, len(data))]
        else:
            for _ in range(rng.randint(1, 8)):
                data[rng.randint(0, min(len(data) - 1, 600))] = rng.randint(0, 255)
        blob = bytes(data)
        read_at = reader(blob)
        try:
            info = probe_media(read_at, len(blob))
        except MediaError:
            outcomes["refused"] += 1
        else:
            outcomes["ok"] += 1
            assert info.bytes_read <= HEAD_BYTES + len(blob)
        assert len(read_at.calls) <= 64
    assert outcomes["ok"] + outcomes["refused"] == 300


@pytest.mark.parametrize(
    ("fmt", "codec", "brand"), [("mpeg", "libx264", "h264"), ("mpegts", "mpeg2video", "mpegvideo")]
)
def test_mpeg_ps_and_ts_carry_either_codec(fmt: str, codec: str, brand: str) -> None:
    data = cached_video(fmt, codec, 66, 48, 2)
    info = probe_media(reader(data), len(data))
    assert (info.width, info.height, info.brand) == (66, 48, brand)
