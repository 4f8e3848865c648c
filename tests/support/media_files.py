"""Real media files for the probe and validation tests, made on the fly.

Images come from Pillow or from a tiny PNG writer (any bit depth, exact file size); videos from PyAV's
bundled ffmpeg; MP4 headers with chosen frame counts are assembled box by box. `SparseFile` stands in for a
huge object: real bytes at the head and the tail, zeros in between, and it counts what is read.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

MiB = 1024 * 1024


class SparseFile:
    """A `read_at` over a virtual file of `size` bytes: `parts` maps offsets to real bytes, the rest is 0."""

    def __init__(self, size: int, parts: dict[int, bytes]) -> None:
        self.size = size
        self.parts = parts
        self.bytes_read = 0
        self.calls: list[tuple[int, int]] = []

    def __call__(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        for start, data in self.parts.items():
            lo, hi = max(start, offset), min(start + len(data), end)
            if lo < hi:
                out[lo - offset : hi - offset] = data[lo - start : hi - start]
        self.bytes_read += len(out)
        return bytes(out)


def reader(data: bytes) -> SparseFile:
    """A counting `read_at` over plain bytes."""
    return SparseFile(len(data), {0: data})


# ------------------------------------------------------------------------------------------ images


def pillow_image(fmt: str, size: tuple[int, int], mode: str = "RGB", **save: object) -> bytes:
    """An image encoded by Pillow (solid colour, so even large ones are small and quick)."""
    from PIL import Image

    color: object = 0 if mode in ("1", "L", "P", "I;16", "I") else tuple(range(40, 40 + len(mode)))
    if mode == "CMYK":
        color = (10, 20, 30, 40)
    image = Image.new(mode, size, color)  # type: ignore[arg-type]
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png(
    width: int,
    height: int,
    *,
    depth: int = 8,
    color_type: int = 2,
    total_size: int | None = None,
    pixels: bool = True,
) -> bytes:
    """A valid PNG (all-zero pixels) of any colour type and bit depth.

    `total_size` pads it to exactly that many bytes with a private ancillary chunk (`paDd`), which decoders
    skip. `pixels=False` writes only the header chunks (for declared sizes nobody should decode).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    parts = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", ihdr)]
    if color_type == 3:
        parts.append(_chunk(b"PLTE", bytes(3 * 2)))
    if pixels:
        row = 1 + (width * depth * PNG_CHANNELS[color_type] + 7) // 8
        compressor = zlib.compressobj(9)
        body = b"".join(compressor.compress(bytes(row)) for _ in range(height)) + compressor.flush()
        parts.append(_chunk(b"IDAT", body))
    tail = _chunk(b"IEND", b"")
    data = b"".join(parts)
    if total_size is not None:
        pad = total_size - len(data) - len(tail) - 12
        if pad < 0:
            raise ValueError(f"a PNG of {width}×{height} needs more than {total_size} bytes")
        data += _chunk(b"paDd", bytes(pad))
    return data + tail


def tiff_big_endian(width: int, height: int) -> bytes:
    """A minimal uncompressed RGB TIFF in Motorola (MM) byte order, written by hand."""
    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, 3, 3, 0),  # BitsPerSample 8,8,8 — stored at an offset (3 shorts > 4 bytes)
        (259, 3, 1, 1 << 16),
        (262, 3, 1, 2 << 16),
        (273, 4, 1, 0),  # StripOffsets, patched below
        (277, 3, 1, 3 << 16),
        (278, 4, 1, height),
        (279, 4, 1, width * height * 3),
    ]
    ifd_at = 8
    ifd_len = 2 + 12 * len(entries) + 4
    bits_at = ifd_at + ifd_len
    strip_at = bits_at + 6
    out = bytearray(b"MM\x00*" + struct.pack(">I", ifd_at))
    out += struct.pack(">H", len(entries))
    for tag, typ, count, value in entries:
        if tag == 258:
            value = bits_at
        elif tag == 273:
            value = strip_at
        out += struct.pack(">HHII", tag, typ, count, value)
    out += struct.pack(">I", 0)
    out += struct.pack(">HHH", 8, 8, 8)
    out += bytes(width * height * 3)
    return bytes(out)


def jpeg_with_app_segments(size: tuple[int, int], app_bytes: int) -> bytes:
    """A Pillow JPEG with APPn segments of `app_bytes` in total inserted before the frame header."""
    base = pillow_image("JPEG", size)
    segments = bytearray()
    remaining = app_bytes
    marker = 0xE2
    while remaining > 0:
        n = min(remaining, 65533)
        segments += bytes((0xFF, marker)) + struct.pack(">H", n + 2) + bytes(n)
        remaining -= n
        marker = 0xE2 + (marker - 0xE2 + 1) % 12
    return base[:2] + bytes(segments) + base[2:]


# ------------------------------------------------------------------------------------------ video


def encode_video(
    fmt: str,
    codec: str,
    size: tuple[int, int],
    frames: int = 2,
    *,
    path: Path | None = None,
    options: dict[str, str] | None = None,
    pix_fmt: str | None = None,
    rate: int = 25,
) -> bytes:
    """A real video made by PyAV (black frames). With `path`, written there (muxers that seek need it)."""
    import av
    import numpy as np

    width, height = size
    odd = width % 2 or height % 2
    target: object = str(path) if path is not None else io.BytesIO()
    container = av.open(target, "w", format=fmt, options=options or {})
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = width, height
    stream.pix_fmt = pix_fmt or ("yuv444p" if odd and codec == "libx264" else "yuv420p")
    frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
    for _ in range(frames):
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    if path is not None:
        return path.read_bytes()
    assert isinstance(target, io.BytesIO)
    return target.getvalue()


@lru_cache(maxsize=64)
def cached_video(fmt: str, codec: str, width: int, height: int, frames: int = 2) -> bytes:
    return encode_video(fmt, codec, (width, height), frames)


def box(kind: bytes, *payload: bytes, large: bool = False) -> bytes:
    body = b"".join(payload)
    if large:
        return struct.pack(">I", 1) + kind + struct.pack(">Q", 16 + len(body)) + body
    return struct.pack(">I", 8 + len(body)) + kind + body


def full_box(kind: bytes, version: int, payload: bytes) -> bytes:
    return box(kind, bytes((version, 0, 0, 0)), payload)


def mp4_moov(width: int, height: int, frames: int, *, timescale: int = 25, version: int = 0) -> bytes:
    """A moov box with one video track of `frames` samples at 1/timescale each (a hand-made header)."""
    if version == 1:
        times = struct.pack(">QQIQ", 0, 0, timescale, frames)
    else:
        times = struct.pack(">IIII", 0, 0, timescale, frames)
    mvhd = full_box(b"mvhd", version, times + bytes(80))
    tkhd_body = bytes(8 if version == 0 else 16) + struct.pack(">I", 1) + bytes(4)
    tkhd_body += struct.pack(">Q", frames) if version == 1 else struct.pack(">I", frames)
    tkhd_body += bytes(8 + 2 + 2 + 2 + 2 + 36) + struct.pack(">II", width << 16, height << 16)
    tkhd = full_box(b"tkhd", version, tkhd_body)
    mdhd = full_box(b"mdhd", version, times + bytes(4))
    hdlr = full_box(b"hdlr", 0, bytes(4) + b"vide" + bytes(12) + b"video\x00")
    visual = bytes(6) + struct.pack(">H", 1) + bytes(16) + struct.pack(">HH", width, height) + bytes(50)
    entry = box(b"avc1", visual)
    stsd = full_box(b"stsd", 0, struct.pack(">I", 1) + entry)
    stts = full_box(b"stts", 0, struct.pack(">III", 1, frames, 1))
    stsz = full_box(b"stsz", 0, struct.pack(">II", 0, frames) + bytes(4 * min(frames, 4096)))
    stbl = box(b"stbl", stsd, stts, stsz)
    minf = box(b"minf", box(b"vmhd", bytes(12)), stbl)
    mdia = box(b"mdia", mdhd, hdlr, minf)
    trak = box(b"trak", tkhd, mdia)
    return box(b"moov", mvhd, trak)


def mp4_file(
    width: int,
    height: int,
    frames: int,
    *,
    moov_at_end: bool = False,
    mdat_bytes: int = 16,
    brand: bytes = b"isom",
    large_mdat: bool = False,
    version: int = 0,
) -> bytes:
    """A hand-assembled MP4 (ftyp, moov, mdat in either order) with chosen size and frame count."""
    ftyp = box(b"ftyp", brand + struct.pack(">I", 512) + brand + b"mp41")
    moov = mp4_moov(width, height, frames, version=version)
    mdat = box(b"mdat", bytes(mdat_bytes), large=large_mdat)
    return ftyp + (mdat + moov if moov_at_end else moov + mdat)


def sparse_mp4(total_size: int, *, width: int = 640, height: int = 360, frames: int = 100) -> SparseFile:
    """A `total_size`-byte MP4 (64-bit mdat size, moov at the tail) of which only head and tail are real."""
    ftyp = box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isommp41")
    moov = mp4_moov(width, height, frames)
    mdat_size = total_size - len(ftyp) - len(moov)
    mdat_header = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", mdat_size)
    return SparseFile(total_size, {0: ftyp + mdat_header, total_size - len(moov): moov})


def sparse_from_real(data: bytes, total_size: int) -> SparseFile:
    """A real MP4 with moov at the end, its mdat stretched (64-bit size) so the file is `total_size` bytes."""
    pos = 0
    boxes: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        boxes.append((kind, data[pos : pos + size]))
        pos += size
    kinds = [k for k, _ in boxes]
    if kinds.index(b"moov") < kinds.index(b"mdat"):
        raise ValueError("expects moov after mdat")
    head = b"".join(b for k, b in boxes[: kinds.index(b"mdat")])
    tail = b"".join(b for k, b in boxes[kinds.index(b"mdat") + 1 :])
    mdat = dict(boxes)[b"mdat"]
    payload = mdat[16:] if struct.unpack_from(">I", mdat)[0] == 1 else mdat[8:]
    mdat_size = total_size - len(head) - len(tail)
    mdat_header = struct.pack(">I", 1) + b"mdat" + struct.pack(">Q", mdat_size)
    return SparseFile(
        total_size,
        {0: head + mdat_header + payload, total_size - len(tail): tail},
    )


def first_box_types(data: bytes) -> list[bytes]:
    out = []
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, pos)
        if size == 1:
            size = struct.unpack_from(">Q", data, pos + 8)[0]
        out.append(kind)
        if size < 8:
            break
        pos += size
    return out


def flv_header_with_metadata(meta: dict[str, float]) -> bytes:
    """An FLV header and an onMetaData script tag written by hand (AMF0 ECMA array of numbers)."""

    def amf_string(s: str) -> bytes:
        raw = s.encode()
        return struct.pack(">H", len(raw)) + raw

    body = b"\x02" + amf_string("onMetaData") + b"\x08" + struct.pack(">I", len(meta))
    for key, value in meta.items():
        body += amf_string(key) + b"\x00" + struct.pack(">d", value)
    body += b"\x00\x00\x09"
    tag = bytes((18,)) + len(body).to_bytes(3, "big") + bytes(7) + body
    return b"FLV\x01\x01" + struct.pack(">I", 9) + bytes(4) + tag + struct.pack(">I", len(tag))
