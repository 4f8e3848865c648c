"""Still images: JPEG, PNG, GIF, BMP, WEBP and TIFF headers (each parser is told its format by the probe)."""

from __future__ import annotations

import struct
import zlib
from typing import Literal

from segflow.media.base import (
    MediaInfo,
    Source,
    check_dims,
    corrupt,
    need,
    u16be,
    u16le,
    u32be,
    u32le,
)

_MAX_JPEG_SEGMENTS = 256
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def parse_jpeg(src: Source) -> MediaInfo:
    pos = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        header = src.read(pos, 4)
        need(header, 2, "JPEG", "marker")
        if header[0] != 0xFF:
            raise corrupt("JPEG", f"expected a marker at offset {pos}, found byte 0x{header[0]:02x}")
        marker = header[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise corrupt("JPEG", "no frame header (SOF) before the image data")
        need(header, 4, "JPEG", "segment header")
        length = u16be(header, 2)
        if length < 2:
            raise corrupt("JPEG", f"segment 0xFF{marker:02X} has an invalid length {length}")
        if marker in _SOF_MARKERS:
            return _jpeg_frame(src, pos, marker)
        pos += 2 + length
        if pos >= src.size:
            break
    raise corrupt("JPEG", "no frame header (SOF) found")


def _jpeg_frame(src: Source, pos: int, marker: int) -> MediaInfo:
    """The frame header (SOF segment) whose marker sits at `pos`."""
    sof = src.read(pos + 4, 6)
    need(sof, 6, "JPEG", "frame header")
    precision, height, width, components = sof[0], u16be(sof, 1), u16be(sof, 3), sof[5]
    if height == 0:
        raise corrupt("JPEG", "frame header leaves the height to a DNL marker (not supported)")
    check_dims("JPEG", width, height)
    if components not in (1, 2, 3, 4):
        raise corrupt("JPEG", f"frame header declares {components} components")
    return MediaInfo(
        format="JPEG",
        media="image",
        width=width,
        height=height,
        bits_per_pixel=precision * components,
        components=components,
        brand="progressive" if marker in (0xC2, 0xC6, 0xCA, 0xCE) else "baseline",
    )


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def parse_png(src: Source) -> MediaInfo:
    ihdr = src.read(8, 25)
    need(ihdr, 25, "PNG", "IHDR chunk")
    if ihdr[4:8] != b"IHDR" or u32be(ihdr, 0) != 13:
        raise corrupt("PNG", "the first chunk is not a 13-byte IHDR")
    if zlib.crc32(ihdr[4:21]) != u32be(ihdr, 21):
        raise corrupt("PNG", "IHDR checksum mismatch")
    width, height = u32be(ihdr, 8), u32be(ihdr, 12)
    depth, color_type = ihdr[16], ihdr[17]
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF:
        raise corrupt("PNG", f"IHDR declares {width}×{height}, beyond the PNG maximum of 2^31-1")
    check_dims("PNG", width, height)
    if color_type not in _PNG_CHANNELS or depth not in _PNG_DEPTHS[color_type]:
        raise corrupt("PNG", f"IHDR has an invalid colour type {color_type} / bit depth {depth}")
    return MediaInfo(
        format="PNG",
        media="image",
        width=width,
        height=height,
        bits_per_pixel=depth * _PNG_CHANNELS[color_type],
        png_color_type=color_type,
        bit_depth=depth,
        components=_PNG_CHANNELS[color_type],
    )


def parse_gif(src: Source) -> MediaInfo:
    h = src.read(0, 13)
    need(h, 13, "GIF", "logical screen descriptor")
    width, height = u16le(h, 6), u16le(h, 8)
    check_dims("GIF", width, height)
    return MediaInfo(format="GIF", media="image", width=width, height=height, bits_per_pixel=8)


def parse_bmp(src: Source) -> MediaInfo:
    h = src.read(0, 30)
    need(h, 26, "BMP", "DIB header")
    dib = u32le(h, 14)
    if dib == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height, bpp = u16le(h, 18), u16le(h, 20), u16le(h, 24)
    else:
        need(h, 30, "BMP", "DIB header")
        width, height = struct.unpack_from("<ii", h, 18)
        bpp = u16le(h, 28)
        height = abs(height)  # negative height: rows stored top-down
    check_dims("BMP", width, height)
    if bpp not in (1, 2, 4, 8, 16, 24, 32, 64):
        raise corrupt("BMP", f"DIB header declares {bpp} bits per pixel")
    return MediaInfo(format="BMP", media="image", width=width, height=height, bits_per_pixel=bpp)


def parse_webp(src: Source) -> MediaInfo:
    h = src.read(0, 30)
    need(h, 30, "WEBP", "chunk header")
    chunk = h[12:16]
    if chunk == b"VP8 ":
        if h[23:26] != b"\x9d\x01\x2a":
            raise corrupt("WEBP", "VP8 frame start code missing")
        width, height, bpp = u16le(h, 26) & 0x3FFF, u16le(h, 28) & 0x3FFF, 24
    elif chunk == b"VP8L":
        if h[20] != 0x2F:
            raise corrupt("WEBP", "VP8L signature missing")
        bits = u32le(h, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        bpp = 32 if (bits >> 28) & 1 else 24
    elif chunk == b"VP8X":
        flags = h[20]
        width = int.from_bytes(h[24:27], "little") + 1
        height = int.from_bytes(h[27:30], "little") + 1
        bpp = 32 if flags & 0x10 else 24
    else:
        raise corrupt("WEBP", f"unknown first chunk {chunk!r}")
    check_dims("WEBP", width, height)
    return MediaInfo(
        format="WEBP",
        media="image",
        width=width,
        height=height,
        bits_per_pixel=bpp,
        brand=chunk.decode().strip(),
    )


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}
_TIFF_TAGS = (256, 257, 258, 277)  # ImageWidth, ImageLength, BitsPerSample, SamplesPerPixel


def parse_tiff(src: Source) -> MediaInfo:
    h = src.read(0, 8)
    need(h, 8, "TIFF", "header")
    if h[2:4] in (b"+\x00", b"\x00+"):
        raise corrupt("TIFF", "BigTIFF is not supported")
    order: Literal["little", "big"] = "little" if h[:2] == b"II" else "big"
    tags = _tiff_first_ifd(src, order, int.from_bytes(h[4:8], order))
    if 256 not in tags or 257 not in tags:
        raise corrupt("TIFF", "first IFD lacks ImageWidth/ImageLength")
    width, height = tags[256][0], tags[257][0]
    check_dims("TIFF", width, height)
    samples = tags.get(277, [len(tags.get(258, [1]))])[0]
    bits = tags.get(258, [1])
    bpp = sum(bits) if len(bits) == samples else bits[0] * samples
    return MediaInfo(
        format="TIFF",
        media="image",
        width=width,
        height=height,
        bits_per_pixel=bpp,
        components=samples,
        brand="II" if order == "little" else "MM",
    )


def _tiff_first_ifd(src: Source, order: Literal["little", "big"], ifd: int) -> dict[int, list[int]]:
    """The values of the tags in `_TIFF_TAGS` that the first IFD (at offset `ifd`) holds."""

    def u(b: bytes, o: int, n: int) -> int:
        return int.from_bytes(b[o : o + n], order)

    count_raw = src.read(ifd, 2)
    need(count_raw, 2, "TIFF", "first IFD")
    count = u(count_raw, 0, 2)
    if count == 0 or count > 4096:
        raise corrupt("TIFF", f"first IFD has {count} entries")
    entries = src.read(ifd + 2, 12 * count)
    need(entries, 12 * count, "TIFF", "first IFD")
    tags: dict[int, list[int]] = {}
    for i in range(count):
        e = entries[12 * i : 12 * i + 12]
        tag, typ, n = u(e, 0, 2), u(e, 2, 2), u(e, 4, 4)
        item = _TIFF_TYPE_SIZES.get(typ)
        if tag not in _TIFF_TAGS or item not in (1, 2, 4) or n == 0 or n > 64:
            continue
        raw = e[8:12] if item * n <= 4 else src.read(u(e, 8, 4), item * n)
        if len(raw) < item * n:
            raise corrupt("TIFF", f"tag {tag} points past the end of the file")
        tags[tag] = [u(raw, k * item, item) for k in range(n)]
    return tags
