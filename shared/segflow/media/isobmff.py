"""ISO base media files: MP4 and MOV (the `moov` at the head or at the tail), and HEIF/AVIF by brand."""

from __future__ import annotations

from collections.abc import Iterator

from segflow.media.base import (
    MAX_MOOV_BYTES,
    MediaInfo,
    Source,
    check_dims,
    corrupt,
    need,
    u16be,
    u32be,
    u64be,
)

_MAX_BOXES = 4096
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1", b"avif", b"avis"})

Span = tuple[int, int]
"""A box payload as (start, end) offsets."""


def _box_iter(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the boxes in data[start:end]; stops at a broken box."""
    pos = start
    count = 0
    while pos + 8 <= end and count < _MAX_BOXES:
        count += 1
        size, typ = u32be(data, pos), data[pos + 4 : pos + 8]
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            size, header = u64be(data, pos + 8), 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return
        yield typ, pos + header, pos + size
        pos += size


def _find(data: bytes, start: int, end: int, typ: bytes) -> Span | None:
    for t, s, e in _box_iter(data, start, end):
        if t == typ:
            return s, e
    return None


def parse_mp4(src: Source) -> MediaInfo:
    """Walk the top-level boxes with small reads until `ftyp` says HEIF or the `moov` is found."""
    pos = 0
    brand: bytes | None = None
    moov: bytes | None = None
    for _ in range(_MAX_BOXES):
        if pos >= src.size:
            break
        hdr = src.read(pos, 16)
        if len(hdr) < 8:
            raise corrupt("MP4", f"truncated box header at offset {pos}", "video")
        size, typ = u32be(hdr, 0), hdr[4:8]
        header = 8
        if size == 1:
            need(hdr, 16, "MP4", "64-bit box size", "video")
            size, header = u64be(hdr, 8), 16
        elif size == 0:
            size = src.size - pos
        if size < header:
            raise corrupt("MP4", f"box {typ!r} at offset {pos} has an invalid size {size}", "video")
        if typ == b"ftyp":
            brand = src.read(pos + header, 4)
            if brand in _HEIF_BRANDS:
                return MediaInfo(format="HEIF", media="image", width=None, height=None, brand=brand.decode())
        elif typ == b"moov":
            moov = _read_moov(src, pos, size, hdr, header)
            break
        pos += size
    fmt = "MOV" if brand in (None, b"qt  ") else "MP4"
    if moov is None:
        raise corrupt(fmt, "no moov box (movie header) found", "video")
    return _parse_moov(fmt, moov, brand.decode("latin-1").strip() if brand else None)


def _read_moov(src: Source, pos: int, size: int, hdr: bytes, header: int) -> bytes:
    """The payload of the `moov` box of `size` bytes at `pos`, whose first bytes `hdr` already holds."""
    if size > MAX_MOOV_BYTES:
        raise corrupt("MP4", f"moov box of {size} bytes is larger than {MAX_MOOV_BYTES} (corrupt?)", "video")
    if pos + size > src.size:
        raise corrupt("MP4", f"moov box at offset {pos} runs past the end of the file", "video")
    # The box header read above already holds the moov's first bytes: read only the rest.
    moov = hdr[header:size]
    if size > len(hdr):
        moov += src.read(pos + len(hdr), size - len(hdr))
    need(moov, size - header, "MP4", "moov box", "video")
    return moov


def _timescaled(payload: bytes, s: int) -> tuple[int, int]:
    """(timescale, duration) of an mvhd or mdhd payload starting at s."""
    if payload[s] == 1:
        return u32be(payload, s + 20), u64be(payload, s + 24)
    return u32be(payload, s + 12), u32be(payload, s + 16)


def _seconds(moov: bytes, box: Span | None) -> float | None:
    """The duration an mvhd or mdhd box states, in seconds (None when absent, short or unscaled)."""
    if box and box[1] - box[0] >= 20:
        scale, dur = _timescaled(moov, box[0])
        if scale:
            return dur / scale
    return None


def _parse_moov(fmt: str, moov: bytes, brand: str | None) -> MediaInfo:
    """The first video track of a `moov` payload."""
    end = len(moov)
    movie_duration = _seconds(moov, _find(moov, 0, end, b"mvhd"))
    for typ, s, e in _box_iter(moov, 0, end):
        if typ != b"trak":
            continue
        mdia = _find(moov, s, e, b"mdia")
        if not mdia:
            continue
        hdlr = _find(moov, mdia[0], mdia[1], b"hdlr")
        if not hdlr or moov[hdlr[0] + 8 : hdlr[0] + 12] != b"vide":
            continue
        return _video_track(fmt, moov, (s, e), mdia, movie_duration, brand)
    raise corrupt(fmt, "moov holds no video track", "video")


def _video_track(
    fmt: str, moov: bytes, trak: Span, mdia: Span, movie_duration: float | None, brand: str | None
) -> MediaInfo:
    width = height = 0
    tkhd = _find(moov, trak[0], trak[1], b"tkhd")
    if tkhd and tkhd[1] - tkhd[0] >= 84:
        width, height = u32be(moov, tkhd[1] - 8) >> 16, u32be(moov, tkhd[1] - 4) >> 16
    duration = _seconds(moov, _find(moov, mdia[0], mdia[1], b"mdhd"))
    if duration is None:
        duration = movie_duration
    frames: int | None = None
    codec: str | None = None
    minf = _find(moov, mdia[0], mdia[1], b"minf")
    stbl = _find(moov, minf[0], minf[1], b"stbl") if minf else None
    if stbl:
        stsd = _find(moov, stbl[0], stbl[1], b"stsd")
        if stsd and stsd[1] - stsd[0] >= 8 + 8 + 28:
            entry = stsd[0] + 8
            codec = moov[entry + 4 : entry + 8].decode("latin-1")
            if not (width and height):
                width, height = u16be(moov, entry + 8 + 24), u16be(moov, entry + 8 + 26)
        frames = _sample_count(moov, stbl)
    check_dims(fmt, width, height, "video")
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


def _sample_count(moov: bytes, stbl: Span) -> int | None:
    """Frames in a video track: the stsz sample count, else the sum of the stts runs."""
    stsz = _find(moov, stbl[0], stbl[1], b"stsz")
    if stsz and stsz[1] - stsz[0] >= 12:
        frames = u32be(moov, stsz[0] + 8)
        if frames:
            return frames
    stts = _find(moov, stbl[0], stbl[1], b"stts")
    if stts and stts[1] - stts[0] >= 8:
        n = min(u32be(moov, stts[0] + 4), (stts[1] - stts[0] - 8) // 8)
        return sum(u32be(moov, stts[0] + 8 + 8 * i) for i in range(n)) or None
    return None
