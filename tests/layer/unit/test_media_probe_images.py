"""probe_media on real image files: format from magic bytes, sizes and depths from the headers only."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from PIL import Image

from segflow.media import HEAD_BYTES, MediaError, MediaInfo, probe_media
from tests.support.media_files import (
    SparseFile,
    jpeg_with_app_segments,
    pillow_image,
    png,
    reader,
    tiff_big_endian,
)


def probe(data: bytes) -> MediaInfo:
    read_at = reader(data)
    info = probe_media(read_at, len(data))
    assert info.bytes_read == read_at.bytes_read
    assert info.bytes_read <= HEAD_BYTES + 1024
    return info


@pytest.mark.parametrize(
    ("fmt", "mode", "save", "expected_format", "bpp"),
    [
        ("JPEG", "RGB", {}, "JPEG", 24),
        ("JPEG", "L", {}, "JPEG", 8),
        ("JPEG", "CMYK", {}, "JPEG", 32),
        ("JPEG", "RGB", {"progressive": True}, "JPEG", 24),
        ("PNG", "RGB", {}, "PNG", 24),
        ("PNG", "RGBA", {}, "PNG", 32),
        ("PNG", "LA", {}, "PNG", 16),
        ("PNG", "L", {}, "PNG", 8),
        ("PNG", "I;16", {}, "PNG", 16),
        ("BMP", "RGB", {}, "BMP", 24),
        ("BMP", "RGBA", {}, "BMP", 32),
        ("BMP", "P", {}, "BMP", 8),
        ("WEBP", "RGB", {"quality": 80}, "WEBP", 24),
        ("WEBP", "RGB", {"lossless": True}, "WEBP", 24),
        ("WEBP", "RGBA", {"lossless": True}, "WEBP", 32),
        ("WEBP", "RGBA", {"quality": 80}, "WEBP", 32),
        ("GIF", "P", {}, "GIF", 8),
        ("TIFF", "RGB", {}, "TIFF", 24),
        ("TIFF", "RGBA", {"compression": "tiff_lzw"}, "TIFF", 32),
    ],
    ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()) or "plain" if isinstance(v, dict) else str(v),
)
def test_pillow_images_report_format_size_and_bits_per_pixel(
    fmt: str, mode: str, save: dict[str, object], expected_format: str, bpp: int
) -> None:
    info = probe(pillow_image(fmt, (321, 123), mode, **save))
    assert (info.format, info.media, info.width, info.height) == (expected_format, "image", 321, 123)
    assert info.bits_per_pixel == bpp


def test_cmyk_jpeg_reports_four_components_and_progressive_is_marked() -> None:
    assert probe(pillow_image("JPEG", (40, 30), "CMYK")).components == 4
    assert probe(pillow_image("JPEG", (40, 30), progressive=True)).brand == "progressive"


@pytest.mark.parametrize(
    ("color_type", "depth", "bpp"),
    [
        *[(0, 1, 1), (0, 8, 8), (0, 16, 16), (2, 8, 24), (2, 16, 48), (3, 8, 8)],
        *[(3, 4, 4), (4, 8, 16), (4, 16, 32), (6, 8, 32), (6, 16, 64)],
    ],
)
def test_png_bits_per_pixel_is_depth_times_channels(color_type: int, depth: int, bpp: int) -> None:
    data = png(17, 9, depth=depth, color_type=color_type)
    with Image.open(io.BytesIO(data)) as decoded:  # a real PNG, not only a header
        decoded.load()
    info = probe(data)
    assert (info.width, info.height, info.png_color_type, info.bit_depth) == (17, 9, color_type, depth)
    assert info.bits_per_pixel == bpp


def test_pillow_palette_png_is_an_indexed_png() -> None:
    image = Image.new("P", (64, 64))
    image.putpalette(list(range(256)) * 3)
    image.putdata([i % 256 for i in range(64 * 64)])
    buf = io.BytesIO()
    image.save(buf, "PNG")
    info = probe(buf.getvalue())
    assert (info.png_color_type, info.bits_per_pixel) == (3, 8)


def test_bmp_with_negative_height_is_top_down_and_reports_the_absolute_height() -> None:
    data = bytearray(pillow_image("BMP", (50, 20)))
    struct.pack_into("<i", data, 22, -20)
    info = probe(bytes(data))
    assert (info.width, info.height) == (50, 20)


def test_big_endian_tiff_is_read_in_motorola_byte_order() -> None:
    data = tiff_big_endian(300, 200)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.size == (300, 200)
    info = probe(data)
    assert (info.format, info.width, info.height) == ("TIFF", 300, 200)
    assert (info.bits_per_pixel, info.brand) == (24, "MM")


def test_little_endian_tiff_from_pillow() -> None:
    info = probe(pillow_image("TIFF", (70, 80)))
    assert (info.brand, info.width, info.height) == ("II", 70, 80)


def test_jpeg_frame_header_behind_large_app_segments_is_found_with_small_reads() -> None:
    """EXIF/ICC segments can push SOF past the 64 KiB head: we hop segment headers, not read the bodies."""
    data = jpeg_with_app_segments((640, 480), app_bytes=300_000)
    read_at = reader(data)
    info = probe_media(read_at, len(data))
    assert (info.width, info.height) == (640, 480)
    assert info.bytes_read <= HEAD_BYTES + 1024


def test_huge_declared_png_dimensions_are_reported_without_allocating() -> None:
    data = png(100_000, 100_000, pixels=False)
    info = probe(data)
    assert (info.width, info.height) == (100_000, 100_000)
    assert info.bytes_read == len(data)


def test_gif_renamed_to_jpg_is_still_a_gif(tmp_path: Path) -> None:
    """The name never decides the format: a GIF saved as photo.jpg is probed as GIF."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(pillow_image("GIF", (30, 30), "P"))
    data = path.read_bytes()
    assert probe(data).format == "GIF"


# --------------------------------------------------------------------------------------------- malformed


def test_empty_file_is_refused_as_empty() -> None:
    with pytest.raises(MediaError) as err:
        probe_media(reader(b""), 0)
    assert err.value.problem == "empty"


def test_size_claims_bytes_the_reader_cannot_give_is_empty() -> None:
    with pytest.raises(MediaError) as err:
        probe_media(lambda offset, length: b"", 1000)
    assert err.value.problem == "empty"


@pytest.mark.parametrize(
    "data",
    [b"hello world, not an image", b"\x00" * 100, b"%PDF-1.7\n", b"PK\x03\x04zipfile", b"<svg></svg>"],
    ids=["text", "zeros", "pdf", "zip", "svg"],
)
def test_wrong_magic_is_a_format_error(data: bytes) -> None:
    with pytest.raises(MediaError) as err:
        probe_media(reader(data), len(data))
    assert err.value.problem == "format"
    assert err.value.code == "InvalidFile.Type"
    assert "unknown file format" in err.value.message


@pytest.mark.parametrize(
    ("fmt", "mode", "cut"),
    [
        ("PNG", "RGB", 20),
        ("PNG", "RGB", 30),
        ("JPEG", "RGB", 3),
        ("JPEG", "RGB", 100),
        ("GIF", "P", 9),
        ("BMP", "RGB", 20),
        ("WEBP", "RGB", 16),
        ("TIFF", "RGB", 9),
    ],
)
def test_truncated_header_is_a_corrupt_image(fmt: str, mode: str, cut: int) -> None:
    data = pillow_image(fmt, (64, 64), mode)
    if fmt == "JPEG" and cut == 100:
        data = jpeg_with_app_segments((64, 64), 5000)
    short = data[:cut]
    with pytest.raises(MediaError) as err:
        probe_media(reader(short), len(short))
    assert err.value.problem == "corrupt"
    assert err.value.code == "InvalidImage.Content"


def test_png_with_a_broken_ihdr_checksum_is_corrupt() -> None:
    data = bytearray(png(10, 10))
    data[20] ^= 0xFF
    with pytest.raises(MediaError, match="checksum"):
        probe_media(reader(bytes(data)), len(data))


def test_png_declaring_zero_width_is_corrupt() -> None:
    data = png(0, 10, pixels=False)
    with pytest.raises(MediaError, match="empty picture"):
        probe_media(reader(data), len(data))


def test_jpeg_without_frame_header_before_scan_is_corrupt() -> None:
    data = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xda\x00\x08" + bytes(50)
    with pytest.raises(MediaError, match="SOF"):
        probe_media(reader(data), len(data))


def test_reads_only_the_head_of_a_large_image() -> None:
    """A 20 MB object: the probe reads one 64 KiB range, never the rest."""
    real = pillow_image("PNG", (800, 600))
    sparse = SparseFile(20 * 1024 * 1024, {0: real})
    info = probe_media(sparse, sparse.size)
    assert (info.width, info.height) == (800, 600)
    assert sparse.bytes_read <= HEAD_BYTES
    assert len(sparse.calls) == 1


def test_a_header_needing_many_small_reads_is_refused_as_corrupt() -> None:
    """Each read may be a ranged GET: hundreds of APPn segments beyond the head are not followed."""
    data = jpeg_with_app_segments((64, 64), app_bytes=200 * 70_000)  # ~215 segments, most past 64 KiB
    read_at = reader(data)
    with pytest.raises(MediaError, match="separate reads") as err:
        probe_media(read_at, len(data))
    assert err.value.problem == "corrupt"
    assert len(read_at.calls) <= 64
