"""Format sniffing and header parsing through a "read bytes at offset" callable.

`probe_media` never looks at a file name: the format comes from the magic bytes, the dimensions (and for
video the frame count, duration and rate) from the headers. It reads the first 64 KiB once; beyond that it
only makes small reads for box/segment headers and, for an MP4/MOV whose `moov` sits at the end, the `moov`
box itself (capped at 64 MiB). Nothing is allocated from a declared dimension, so a header that claims
100000×100000 pixels costs nothing.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

from segflow.errors import InputValidationError

ReadAt = Callable[[int, int], bytes]

HEAD_BYTES = 64 * 1024
MAX_MOOV_BYTES = 64 * 1024 * 1024
_MAX_BOXES = 4096
_MAX_JPEG_SEGMENTS = 256
_MAX_READS = 64  # read_at calls per probe, the head included

# The code a probe failure carries before an action is known; `validation` maps it to the action's code.
_FORMAT_CODE = "InvalidFile.Type"
_IMAGE_CORRUPT_CODE = "InvalidImage.Content"
_VIDEO_CORRUPT_CODE = "InvalidFile.Decode"
_EMPTY_CODE = "InvalidFile.Content"


class MediaError(InputValidationError):
    """The bytes are not a readable image or video: `problem` is "format", "corrupt" or "empty"."""

    def __init__(
        self, message: str, *, problem: str, media: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.problem = problem
        self.media = media


@dataclass(frozen=True)
class MediaInfo:
    """What the headers say about a file."""

    format: str  # "JPEG" "PNG" "BMP" "WEBP" "GIF" "TIFF" "HEIF" | "MP4" "MOV" "AVI" "FLV" "MKV" "TS" "MPG"
    media: str  # "image" | "video"
    width: int | None
    height: int | None
    bits_per_pixel: int | None = None  # PNG: bit depth × channels; JPEG: 8 × components
    png_color_type: int | None = None
    frames: int | None = None
    duration_seconds: float | None = None
    fps: float | None = None
    bytes_read: int = 0
    components: int | None = None  # JPEG: 1 grey, 3 YCbCr, 4 CMYK/YCCK
    brand: str | None = None  # MP4/MOV major brand, Matroska DocType ("matroska" | "webm"), video codec hint
    bit_depth: int | None = None  # PNG bit depth per sample

    @property
    def is_video(self) -> bool:
        return self.media == "video"


def probe_media(read_at: ReadAt, size: int) -> MediaInfo:
    """Sniff the format of an object of `size` bytes and parse its header.

    Raises `MediaError` (an `InputValidationError`) for an empty, unknown, truncated or corrupt file.
    """
    if size <= 0:
        raise MediaError("the file is empty (0 bytes)", problem="empty", code=_EMPTY_CODE)
    src = _Source(read_at, size)
    head = src.head
    if not head:
        raise MediaError("the file is empty (no bytes could be read)", problem="empty", code=_EMPTY_CODE)
    for sniff, parse in _PARSERS:
        if sniff(head):
            info = parse(src)
            return _with_bytes_read(info, src.bytes_read)
    raise MediaError(
        f"unknown file format (magic bytes {head[:8].hex(' ')}); expected an image (JPEG, PNG, BMP, WEBP, "
        "GIF, TIFF) or a video (MP4, MOV, AVI, FLV, MKV, MPEG-TS, MPEG-PS)",
        problem="format",
        code=_FORMAT_CODE,
    )


def _with_bytes_read(info: MediaInfo, n: int) -> MediaInfo:
    return replace(info, bytes_read=n)


class _Source:
    """Reads through `read_at`, keeps the head and counts every byte read."""

    def __init__(self, read_at: ReadAt, size: int) -> None:
        self._read_at = read_at
        self.size = size
        self.bytes_read = 0
        self.reads = 0
        self.head = self._fetch(0, min(size, HEAD_BYTES))

    def _fetch(self, offset: int, length: int) -> bytes:
        if length <= 0 or offset >= self.size:
            return b""
        self.reads += 1
        if self.reads > _MAX_READS:
            # every read may be a ranged GET: a header that needs this many is broken or hostile
            raise MediaError(
                f"the headers need more than {_MAX_READS} separate reads; the file looks corrupt",
                problem="corrupt",
                code=_VIDEO_CORRUPT_CODE,
            )
        data = bytes(self._read_at(offset, length))[:length]
        self.bytes_read += len(data)
        return data

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` (fewer at the end), from the head when it holds them."""
        length = max(0, min(length, self.size - offset))
        if offset + length <= len(self.head):
            return self.head[offset : offset + length]
        return self._fetch(offset, length)


def _corrupt(fmt: str, message: str, media: str = "image") -> MediaError:
    code = _IMAGE_CORRUPT_CODE if media == "image" else _VIDEO_CORRUPT_CODE
    return MediaError(f"{fmt}: {message}", problem="corrupt", media=media, code=code)


def _need(data: bytes, n: int, fmt: str, what: str, media: str = "image") -> None:
    if len(data) < n:
        raise _corrupt(fmt, f"truncated {what} ({len(data)} of {n} bytes)", media)


def _u16be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 2], "big")


def _u32be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "big")


def _u64be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 8], "big")


def _u16le(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 2], "little")


def _u32le(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "little")


def _check_dims(fmt: str, width: int, height: int, media: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise _corrupt(fmt, f"header declares an empty picture ({width}×{height})", media)


# --------------------------------------------------------------------------------------------- images


def _is_jpeg(h: bytes) -> bool:
    return h[:3] == b"\xff\xd8\xff"


_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})


def _parse_jpeg(src: _Source) -> MediaInfo:
    pos = 2
    for _ in range(_MAX_JPEG_SEGMENTS):
        header = src.read(pos, 4)
        _need(header, 2, "JPEG", "marker")
        if header[0] != 0xFF:
            raise _corrupt("JPEG", f"expected a marker at offset {pos}, found byte 0x{header[0]:02x}")
        marker = header[1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _STANDALONE_MARKERS:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("JPEG", "no frame header (SOF) before the image data")
        _need(header, 4, "JPEG", "segment header")
        length = _u16be(header, 2)
        if length < 2:
            raise _corrupt("JPEG", f"segment 0xFF{marker:02X} has an invalid length {length}")
        if marker in _SOF_MARKERS:
            sof = src.read(pos + 4, 6)
            _need(sof, 6, "JPEG", "frame header")
            precision, height, width, components = sof[0], _u16be(sof, 1), _u16be(sof, 3), sof[5]
            if height == 0:
                raise _corrupt("JPEG", "frame header leaves the height to a DNL marker (not supported)")
            _check_dims("JPEG", width, height)
            if components not in (1, 2, 3, 4):
                raise _corrupt("JPEG", f"frame header declares {components} components")
            return MediaInfo(
                format="JPEG",
                media="image",
                width=width,
                height=height,
                bits_per_pixel=precision * components,
                components=components,
                brand="progressive" if marker in (0xC2, 0xC6, 0xCA, 0xCE) else "baseline",
            )
        pos += 2 + length
        if pos >= src.size:
            break
    raise _corrupt("JPEG", "no frame header (SOF) found")


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}


def _is_png(h: bytes) -> bool:
    return h[:8] == _PNG_MAGIC


def _parse_png(src: _Source) -> MediaInfo:
    ihdr = src.read(8, 25)
    _need(ihdr, 25, "PNG", "IHDR chunk")
    if ihdr[4:8] != b"IHDR" or _u32be(ihdr, 0) != 13:
        raise _corrupt("PNG", "the first chunk is not a 13-byte IHDR")
    if zlib.crc32(ihdr[4:21]) != _u32be(ihdr, 21):
        raise _corrupt("PNG", "IHDR checksum mismatch")
    width, height = _u32be(ihdr, 8), _u32be(ihdr, 12)
    depth, color_type = ihdr[16], ihdr[17]
    if width > 0x7FFFFFFF or height > 0x7FFFFFFF:
        raise _corrupt("PNG", f"IHDR declares {width}×{height}, beyond the PNG maximum of 2^31-1")
    _check_dims("PNG", width, height)
    if color_type not in _PNG_CHANNELS or depth not in _PNG_DEPTHS[color_type]:
        raise _corrupt("PNG", f"IHDR has an invalid colour type {color_type} / bit depth {depth}")
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


def _is_gif(h: bytes) -> bool:
    return h[:6] in (b"GIF87a", b"GIF89a")


def _parse_gif(src: _Source) -> MediaInfo:
    h = src.read(0, 13)
    _need(h, 13, "GIF", "logical screen descriptor")
    width, height = _u16le(h, 6), _u16le(h, 8)
    _check_dims("GIF", width, height)
    return MediaInfo(format="GIF", media="image", width=width, height=height, bits_per_pixel=8)


def _is_bmp(h: bytes) -> bool:
    return h[:2] == b"BM" and len(h) >= 18 and _u32le(h, 14) in (12, 16, 40, 52, 56, 64, 108, 124)


def _parse_bmp(src: _Source) -> MediaInfo:
    h = src.read(0, 30)
    _need(h, 26, "BMP", "DIB header")
    dib = _u32le(h, 14)
    if dib == 12:  # BITMAPCOREHEADER: unsigned 16-bit sizes
        width, height, bpp = _u16le(h, 18), _u16le(h, 20), _u16le(h, 24)
    else:
        _need(h, 30, "BMP", "DIB header")
        width, height = struct.unpack_from("<ii", h, 18)
        bpp = _u16le(h, 28)
        height = abs(height)  # negative height: rows stored top-down
    _check_dims("BMP", width, height)
    if bpp not in (1, 2, 4, 8, 16, 24, 32, 64):
        raise _corrupt("BMP", f"DIB header declares {bpp} bits per pixel")
    return MediaInfo(format="BMP", media="image", width=width, height=height, bits_per_pixel=bpp)


def _is_webp(h: bytes) -> bool:
    return h[:4] == b"RIFF" and h[8:12] == b"WEBP"


def _parse_webp(src: _Source) -> MediaInfo:
    h = src.read(0, 30)
    _need(h, 30, "WEBP", "chunk header")
    chunk = h[12:16]
    if chunk == b"VP8 ":
        if h[23:26] != b"\x9d\x01\x2a":
            raise _corrupt("WEBP", "VP8 frame start code missing")
        width, height, bpp = _u16le(h, 26) & 0x3FFF, _u16le(h, 28) & 0x3FFF, 24
    elif chunk == b"VP8L":
        if h[20] != 0x2F:
            raise _corrupt("WEBP", "VP8L signature missing")
        bits = _u32le(h, 21)
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
        bpp = 32 if (bits >> 28) & 1 else 24
    elif chunk == b"VP8X":
        flags = h[20]
        width = int.from_bytes(h[24:27], "little") + 1
        height = int.from_bytes(h[27:30], "little") + 1
        bpp = 32 if flags & 0x10 else 24
    else:
        raise _corrupt("WEBP", f"unknown first chunk {chunk!r}")
    _check_dims("WEBP", width, height)
    return MediaInfo(
        format="WEBP",
        media="image",
        width=width,
        height=height,
        bits_per_pixel=bpp,
        brand=chunk.decode().strip(),
    )


def _is_tiff(h: bytes) -> bool:
    return h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8}


def _parse_tiff(src: _Source) -> MediaInfo:
    h = src.read(0, 8)
    _need(h, 8, "TIFF", "header")
    if h[2:4] in (b"+\x00", b"\x00+"):
        raise _corrupt("TIFF", "BigTIFF is not supported")
    order: Literal["little", "big"] = "little" if h[:2] == b"II" else "big"

    def u(b: bytes, o: int, n: int) -> int:
        return int.from_bytes(b[o : o + n], order)

    ifd = u(h, 4, 4)
    count_raw = src.read(ifd, 2)
    _need(count_raw, 2, "TIFF", "first IFD")
    count = u(count_raw, 0, 2)
    if count == 0 or count > 4096:
        raise _corrupt("TIFF", f"first IFD has {count} entries")
    entries = src.read(ifd + 2, 12 * count)
    _need(entries, 12 * count, "TIFF", "first IFD")
    tags: dict[int, list[int]] = {}
    for i in range(count):
        e = entries[12 * i : 12 * i + 12]
        tag, typ, n = u(e, 0, 2), u(e, 2, 2), u(e, 4, 4)
        item = _TIFF_TYPE_SIZES.get(typ)
        if tag not in (256, 257, 258, 277) or item not in (1, 2, 4) or n == 0 or n > 64:
            continue
        raw = e[8:12] if item * n <= 4 else src.read(u(e, 8, 4), item * n)
        if len(raw) < item * n:
            raise _corrupt("TIFF", f"tag {tag} points past the end of the file")
        tags[tag] = [u(raw, k * item, item) for k in range(n)]
    if 256 not in tags or 257 not in tags:
        raise _corrupt("TIFF", "first IFD lacks ImageWidth/ImageLength")
    width, height = tags[256][0], tags[257][0]
    _check_dims("TIFF", width, height)
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


# --------------------------------------------------------------------------------------------- MP4/MOV

_MP4_TOP = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis"})


def _is_mp4(h: bytes) -> bool:
    if len(h) < 8:
        return False
    size = _u32be(h, 0)
    return h[4:8] in _MP4_TOP and (size in (0, 1) or size >= 8)


def _box_iter(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]; stops at a broken box."""
    pos = start
    count = 0
    while pos + 8 <= end and count < _MAX_BOXES:
        count += 1
        size, typ = _u32be(data, pos), data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, header = _u64be(data, pos + 8), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield typ, pos + header, pos + size
        pos += size


def _find(data: bytes, start: int, end: int, typ: bytes) -> tuple[int, int] | None:
    for t, s, e in _box_iter(data, start, end):
        if t == typ:
            return s, e
    return None


def _parse_mp4(src: _Source) -> MediaInfo:
    pos = 0
    brand: bytes | None = None
    moov: bytes | None = None
    for _ in range(_MAX_BOXES):
        if pos >= src.size:
            break
        hdr = src.read(pos, 16)
        if len(hdr) < 8:
            raise _corrupt("MP4", f"truncated box header at offset {pos}", "video")
        size, typ = _u32be(hdr, 0), hdr[4:8]
        header = 8
        if size == 1:
            _need(hdr, 16, "MP4", "64-bit box size", "video")
            size, header = _u64be(hdr, 8), 16
        elif size == 0:
            size = src.size - pos
        if size < header:
            raise _corrupt("MP4", f"box {typ!r} at offset {pos} has an invalid size {size}", "video")
        if typ == b"ftyp":
            brand = src.read(pos + header, 4)
            if brand in _HEIF_BRANDS:
                return MediaInfo(format="HEIF", media="image", width=None, height=None, brand=brand.decode())
        elif typ == b"moov":
            if size > MAX_MOOV_BYTES:
                raise _corrupt(
                    "MP4", f"moov box of {size} bytes is larger than {MAX_MOOV_BYTES} (corrupt?)", "video"
                )
            if pos + size > src.size:
                raise _corrupt("MP4", f"moov box at offset {pos} runs past the end of the file", "video")
            # The box header read above already holds the moov's first bytes: read only the rest.
            moov = hdr[header:size]
            if size > len(hdr):
                moov += src.read(pos + len(hdr), size - len(hdr))
            _need(moov, size - header, "MP4", "moov box", "video")
            break
        pos += size
    fmt = "MOV" if brand in (None, b"qt  ") else "MP4"
    if moov is None:
        raise _corrupt(fmt, "no moov box (movie header) found", "video")
    return _parse_moov(fmt, moov, brand.decode("latin-1").strip() if brand else None)


def _timescaled(payload: bytes, s: int) -> tuple[int, int]:
    """(timescale, duration) of an mvhd or mdhd payload starting at s."""
    if payload[s] == 1:
        return _u32be(payload, s + 20), _u64be(payload, s + 24)
    return _u32be(payload, s + 12), _u32be(payload, s + 16)


def _parse_moov(fmt: str, moov: bytes, brand: str | None) -> MediaInfo:
    end = len(moov)
    movie_duration: float | None = None
    mvhd = _find(moov, 0, end, b"mvhd")
    if mvhd and mvhd[1] - mvhd[0] >= 20:
        scale, dur = _timescaled(moov, mvhd[0])
        if scale:
            movie_duration = dur / scale
    for typ, s, e in _box_iter(moov, 0, end):
        if typ != b"trak":
            continue
        mdia = _find(moov, s, e, b"mdia")
        if not mdia:
            continue
        hdlr = _find(moov, mdia[0], mdia[1], b"hdlr")
        if not hdlr or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        width = height = 0
        tkhd = _find(moov, s, e, b"tkhd")
        if tkhd and tkhd[1] - tkhd[0] >= 84:
            width, height = _u32be(moov, tkhd[1] - 8) >> 16, _u32be(moov, tkhd[1] - 4) >> 16
        duration = movie_duration
        mdhd = _find(moov, mdia[0], mdia[1], b"mdhd")
        if mdhd and mdhd[1] - mdhd[0] >= 20:
            scale, dur = _timescaled(moov, mdhd[0])
            if scale:
                duration = dur / scale
        frames: int | None = None
        minf = _find(moov, mdia[0], mdia[1], b"minf")
        stbl = _find(moov, minf[0], minf[1], b"stbl") if minf else None
        codec: str | None = None
        if stbl:
            stsd = _find(moov, stbl[0], stbl[1], b"stsd")
            if stsd and stsd[1] - stsd[0] >= 8 + 8 + 28:
                entry = stsd[0] + 8
                codec = moov[entry + 4 : entry + 8].decode("latin-1")
                if not (width and height):
                    width, height = _u16be(moov, entry + 8 + 24), _u16be(moov, entry + 8 + 26)
            stsz = _find(moov, stbl[0], stbl[1], b"stsz")
            if stsz and stsz[1] - stsz[0] >= 12:
                frames = _u32be(moov, stsz[0] + 8) or None
            if frames is None:
                stts = _find(moov, stbl[0], stbl[1], b"stts")
                if stts and stts[1] - stts[0] >= 8:
                    n = min(_u32be(moov, stts[0] + 4), (stts[1] - stts[0] - 8) // 8)
                    frames = sum(_u32be(moov, stts[0] + 8 + 8 * i) for i in range(n)) or None
        _check_dims(fmt, width, height, "video")
        fps = frames / duration if frames and duration else None
        return MediaInfo(
            format=fmt,
            media="video",
            width=width,
            height=height,
            frames=frames,
            duration_seconds=duration,
            fps=fps,
            brand=brand if codec is None else f"{brand or 'qt'}/{codec}",
        )
    raise _corrupt(fmt, "moov holds no video track", "video")


# --------------------------------------------------------------------------------------------- AVI


def _is_avi(h: bytes) -> bool:
    return h[:4] == b"RIFF" and h[8:12] in (b"AVI ", b"AVIX")


def _riff_chunks(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        cid, size = data[pos : pos + 4], _u32le(data, pos + 4)
        yield cid, pos + 8, min(pos + 8 + size, end)
        pos += 8 + size + (size & 1)


def _parse_avi(src: _Source) -> MediaInfo:
    h = src.head
    hdrl: tuple[int, int] | None = None
    for cid, s, e in _riff_chunks(h, 12, len(h)):
        if cid == b"LIST" and h[s : s + 4] == b"hdrl":
            hdrl = (s + 4, e)
            break
    if hdrl is None:
        raise _corrupt("AVI", "no hdrl header list in the first 64 KiB", "video")
    width = height = total = 0
    usec = 0
    strh_frames = dmlh_frames = 0
    rate = 0.0
    for cid, s, e in _riff_chunks(h, *hdrl):
        if cid == b"avih" and e - s >= 40:
            usec, total = _u32le(h, s), _u32le(h, s + 16)
            width, height = _u32le(h, s + 32), abs(struct.unpack_from("<i", h, s + 36)[0])
        elif cid == b"LIST" and h[s : s + 4] == b"strl":
            for sid, ss, se in _riff_chunks(h, s + 4, e):
                if sid == b"strh" and se - ss >= 36 and h[ss : ss + 4] == b"vids" and not strh_frames:
                    scale, rate_num, length = _u32le(h, ss + 20), _u32le(h, ss + 24), _u32le(h, ss + 32)
                    strh_frames = length
                    rate = rate_num / scale if scale else 0.0
        elif cid == b"LIST" and h[s : s + 4] == b"odml":
            for sid, ss, se in _riff_chunks(h, s + 4, e):
                if sid == b"dmlh" and se - ss >= 4:
                    dmlh_frames = _u32le(h, ss)
    if not width and not height:
        raise _corrupt("AVI", "no main AVI header (avih)", "video")
    _check_dims("AVI", width, height, "video")
    frames = dmlh_frames or strh_frames or total or None
    fps = rate or (1_000_000 / usec if usec else None)
    duration = frames / fps if frames and fps else None
    return MediaInfo(
        format="AVI",
        media="video",
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        duration_seconds=duration,
    )


# --------------------------------------------------------------------------------------------- FLV


def _is_flv(h: bytes) -> bool:
    return h[:3] == b"FLV" and len(h) >= 4 and h[3] == 1


class _Amf:
    """Just enough AMF0 to read an onMetaData array."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("AMF truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def string(self, long: bool = False) -> str:
        n = int.from_bytes(self._take(4 if long else 2), "big")
        return self._take(n).decode("utf-8", "replace")

    def value(self, depth: int = 0) -> object:
        if depth > 8:
            raise ValueError("AMF nested too deep")
        marker = self._take(1)[0]
        if marker == 0x00:
            return struct.unpack(">d", self._take(8))[0]
        if marker == 0x01:
            return bool(self._take(1)[0])
        if marker == 0x02:
            return self.string()
        if marker == 0x0C:
            return self.string(long=True)
        if marker in (0x05, 0x06):
            return None
        if marker in (0x03, 0x08):
            if marker == 0x08:
                self._take(4)
            out: dict[str, object] = {}
            for _ in range(4096):
                key = self.string()
                if not key and self.data[self.pos : self.pos + 1] == b"\x09":
                    self.pos += 1
                    return out
                out[key] = self.value(depth + 1)
            raise ValueError("AMF object too large")
        if marker == 0x0A:
            n = int.from_bytes(self._take(4), "big")
            return [self.value(depth + 1) for _ in range(min(n, 4096))]
        if marker == 0x0B:
            self._take(10)
            return None
        raise ValueError(f"AMF marker {marker}")


def _parse_flv(src: _Source) -> MediaInfo:
    h = src.head
    _need(h, 13, "FLV", "header", "video")
    pos = _u32be(h, 5) + 4
    meta: dict[str, object] = {}
    for _ in range(64):
        if pos + 11 > len(h):
            break
        tag_type, size = h[pos] & 0x1F, int.from_bytes(h[pos + 1 : pos + 4], "big")
        if tag_type == 18:
            amf = _Amf(h[: pos + 11 + size], pos + 11)
            try:
                if amf.value() == "onMetaData":
                    value = amf.value()
                    if isinstance(value, dict):
                        meta = value
            except (ValueError, struct.error) as exc:
                raise _corrupt("FLV", f"unreadable onMetaData ({exc})", "video") from exc
            break
        pos += 11 + size + 4
    width, height = _num(meta.get("width")), _num(meta.get("height"))
    fps, duration = _num(meta.get("framerate")), _num(meta.get("duration"))
    if width is not None and height is not None:
        _check_dims("FLV", int(width), int(height), "video")
    frames = round(fps * duration) if fps and duration else None
    return MediaInfo(
        format="FLV",
        media="video",
        width=int(width) if width is not None else None,
        height=int(height) if height is not None else None,
        frames=frames,
        fps=fps,
        duration_seconds=duration,
    )


def _num(value: object) -> float | None:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    return None


# --------------------------------------------------------------------------------------------- Matroska


def _is_mkv(h: bytes) -> bool:
    return h[:4] == b"\x1a\x45\xdf\xa3"


def _vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int] | None:
    """(value, length) of an EBML variable-size integer; None when truncated or invalid."""
    if pos >= len(data) or data[pos] == 0:
        return None
    first = data[pos]
    length = 8 - first.bit_length() + 1
    if pos + length > len(data):
        return None
    value = first if keep_marker else first & ((1 << (8 - length)) - 1)
    for b in data[pos + 1 : pos + length]:
        value = (value << 8) | b
    return value, length


_EBML_UNKNOWN = -1


def _ebml_iter(data: bytes, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(id, payload start, payload end) of EBML elements; unknown sizes run to `end`."""
    pos = start
    while pos < end:
        eid = _vint(data, pos, keep_marker=True)
        if eid is None:
            return
        size = _vint(data, pos + eid[1], keep_marker=False)
        if size is None:
            return
        s = pos + eid[1] + size[1]
        all_ones = (1 << (7 * size[1])) - 1
        e = end if size[0] == all_ones else min(s + size[0], end)
        yield eid[0], s, e
        if size[0] == all_ones:
            return
        pos = s + size[0]


def _ebml_uint(data: bytes, s: int, e: int) -> int:
    return int.from_bytes(data[s:e], "big") if 0 < e - s <= 8 else 0


def _parse_mkv(src: _Source) -> MediaInfo:
    h = src.head
    doctype: str | None = None
    segment: tuple[int, int] | None = None
    for eid, s, e in _ebml_iter(h, 0, len(h)):
        if eid == 0x1A45DFA3:
            for cid, cs, ce in _ebml_iter(h, s, e):
                if cid == 0x4282:
                    doctype = h[cs:ce].rstrip(b"\x00").decode("latin-1")
        elif eid == 0x18538067:
            segment = (s, e)
            break
    if doctype is None:
        raise _corrupt("MKV", "EBML header without a DocType", "video")
    if doctype not in ("matroska", "webm"):
        raise MediaError(
            f"EBML file of DocType {doctype!r} is not Matroska/WebM", problem="format", code=_FORMAT_CODE
        )
    if segment is None:
        raise _corrupt("MKV", "no Segment element", "video")
    width = height = None
    duration: float | None = None
    fps: float | None = None
    scale = 1_000_000
    raw_duration: float | None = None
    for eid, s, e in _ebml_iter(h, *segment):
        if eid == 0x1549A966:  # Info
            for cid, cs, ce in _ebml_iter(h, s, e):
                if cid == 0x2AD7B1:
                    scale = _ebml_uint(h, cs, ce) or scale
                elif cid == 0x4489 and ce - cs in (4, 8):
                    raw_duration = struct.unpack(">f" if ce - cs == 4 else ">d", h[cs:ce])[0]
        elif eid == 0x1654AE6B:  # Tracks
            for tid, ts, te in _ebml_iter(h, s, e):
                if tid != 0xAE or width is not None:
                    continue
                track_type, default_ns, video = 0, 0, None
                for cid, cs, ce in _ebml_iter(h, ts, te):
                    if cid == 0x83:
                        track_type = _ebml_uint(h, cs, ce)
                    elif cid == 0x23E383:
                        default_ns = _ebml_uint(h, cs, ce)
                    elif cid == 0xE0:
                        video = (cs, ce)
                if track_type == 1 and video:
                    for vid, vs, ve in _ebml_iter(h, *video):
                        if vid == 0xB0:
                            width = _ebml_uint(h, vs, ve)
                        elif vid == 0xBA:
                            height = _ebml_uint(h, vs, ve)
                    fps = 1e9 / default_ns if default_ns else None
        elif eid == 0x1F43B675:  # Cluster: the headers are over
            break
    if raw_duration is not None and math.isfinite(raw_duration) and raw_duration >= 0:
        duration = raw_duration * scale / 1e9
    if width is not None and height is not None:
        _check_dims("MKV", width, height, "video")
    frames = round(fps * duration) if fps and duration else None
    return MediaInfo(
        format="MKV",
        media="video",
        width=width,
        height=height,
        frames=frames,
        fps=fps,
        duration_seconds=duration,
        brand=doctype,
    )


# --------------------------------------------------------------------------------------------- MPEG TS/PS


def _is_ts(h: bytes) -> bool:
    if len(h) < 188 or h[0] != 0x47:
        return False
    packets = min(len(h) // 188, 8)
    return all(h[i * 188] == 0x47 for i in range(packets))


def _is_ps(h: bytes) -> bool:
    return h[:4] == b"\x00\x00\x01\xba"


def _parse_ts(src: _Source) -> MediaInfo:
    h = src.head
    streams: dict[int, bytearray] = {}
    for i in range(len(h) // 188):
        pkt = h[i * 188 : i * 188 + 188]
        if pkt[0] != 0x47:
            break  # lost sync: the first packets were fine (sniffed), use what they carry
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        afc = (pkt[3] >> 4) & 3
        start = 4
        if afc & 2:
            start += 1 + pkt[4]
        if afc & 1 and pid not in (0, 0x1FFF) and start < 188:
            streams.setdefault(pid, bytearray()).extend(pkt[start:])
    for payload in streams.values():
        found = _video_dims(bytes(payload))
        if found:
            return MediaInfo(
                format="TS", media="video", width=found[0], height=found[1], fps=found[2], brand=found[3]
            )
    return MediaInfo(format="TS", media="video", width=None, height=None)


def _parse_ps(src: _Source) -> MediaInfo:
    found = _video_dims(src.head)
    if found:
        return MediaInfo(
            format="MPG", media="video", width=found[0], height=found[1], fps=found[2], brand=found[3]
        )
    return MediaInfo(format="MPG", media="video", width=None, height=None)


_MPEG2_RATES = (0.0, 24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 50.0, 60000 / 1001, 60.0)


def _video_dims(data: bytes) -> tuple[int, int, float | None, str] | None:
    """Width, height, rate and codec from an MPEG-1/2 sequence header or an H.264 SPS in a stream."""
    seq = data.find(b"\x00\x00\x01\xb3")
    if seq >= 0 and seq + 8 <= len(data):
        b = data[seq + 4 : seq + 8]
        width, height = (b[0] << 4) | (b[1] >> 4), ((b[1] & 0x0F) << 8) | b[2]
        rate_code = b[3] & 0x0F
        rate = _MPEG2_RATES[rate_code] if rate_code < len(_MPEG2_RATES) and rate_code else None
        if width and height:
            return width, height, rate, "mpegvideo"
    pos = 0
    while True:
        pos = data.find(b"\x00\x00\x01", pos)
        if pos < 0 or pos + 4 > len(data):
            return None
        nal = data[pos + 3]
        if nal & 0x9F == 0x07:
            dims = _h264_sps_dims(data[pos + 4 : pos + 4 + 256])
            if dims:
                return dims[0], dims[1], None, "h264"
        pos += 3


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        if self.pos >= 8 * len(self.data):
            raise ValueError("SPS truncated")
        b = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return b

    def bits(self, n: int) -> int:
        v = 0
        for _ in range(n):
            v = (v << 1) | self.bit()
        return v

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("bad exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        v = self.ue()
        return (v + 1) // 2 if v & 1 else -(v // 2)


def _h264_sps_dims(raw: bytes) -> tuple[int, int] | None:
    rbsp = raw.replace(b"\x00\x00\x03", b"\x00\x00")
    try:
        r = _Bits(rbsp)
        profile = r.bits(8)
        r.bits(16)  # constraint flags, level
        r.ue()
        chroma = 1
        separate = 0
        if profile in (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135):
            chroma = r.ue()
            if chroma == 3:
                separate = r.bit()
            r.ue()
            r.ue()
            r.bit()
            if r.bit():  # scaling matrices
                for i in range(8 if chroma != 3 else 12):
                    if r.bit():
                        last = nxt = 8
                        for _ in range(16 if i < 6 else 64):
                            if nxt:
                                nxt = (last + r.se()) % 256
                            last = nxt or last
        r.ue()  # log2_max_frame_num
        poc = r.ue()
        if poc == 0:
            r.ue()
        elif poc == 1:
            r.bit()
            r.se()
            r.se()
            for _ in range(min(r.ue(), 255)):
                r.se()
        r.ue()
        r.bit()
        w_mbs, h_units = r.ue() + 1, r.ue() + 1
        frame_mbs_only = r.bit()
        if not frame_mbs_only:
            r.bit()
        r.bit()
        crop = (r.ue(), r.ue(), r.ue(), r.ue()) if r.bit() else (0, 0, 0, 0)
    except ValueError:
        return None
    array_type = 0 if separate else chroma
    sub_w, sub_h = {1: (2, 2), 2: (2, 1), 3: (1, 1)}.get(array_type, (1, 1))
    unit_x = 1 if array_type == 0 else sub_w
    unit_y = (2 - frame_mbs_only) * (1 if array_type == 0 else sub_h)
    width = w_mbs * 16 - unit_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * h_units * 16 - unit_y * (crop[2] + crop[3])
    return (width, height) if width > 0 and height > 0 else None


# Order matters: RIFF is told apart by its form type, TS only after everything with a real magic.
_PARSERS: tuple[tuple[Callable[[bytes], bool], Callable[[_Source], MediaInfo]], ...] = (
    (_is_jpeg, _parse_jpeg),
    (_is_png, _parse_png),
    (_is_gif, _parse_gif),
    (_is_webp, _parse_webp),
    (_is_avi, _parse_avi),
    (_is_bmp, _parse_bmp),
    (_is_tiff, _parse_tiff),
    (_is_flv, _parse_flv),
    (_is_mkv, _parse_mkv),
    (_is_ps, _parse_ps),
    (_is_mp4, _parse_mp4),
    (_is_ts, _parse_ts),
)
