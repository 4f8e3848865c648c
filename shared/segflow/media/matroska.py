"""Matroska and WebM: the EBML header's DocType, then Info and Tracks of the Segment in the first 64 KiB."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

from segflow.media.base import MediaError, MediaInfo, Source, check_dims, corrupt

_EBML = 0x1A45DFA3
_DOCTYPE = 0x4282
_SEGMENT = 0x18538067
_INFO = 0x1549A966
_TIMECODE_SCALE = 0x2AD7B1
_DURATION = 0x4489
_TRACKS = 0x1654AE6B
_TRACK_ENTRY = 0xAE
_TRACK_TYPE = 0x83
_DEFAULT_DURATION = 0x23E383
_VIDEO = 0xE0
_PIXEL_WIDTH = 0xB0
_PIXEL_HEIGHT = 0xBA
_CLUSTER = 0x1F43B675


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


def parse_mkv(src: Source) -> MediaInfo:
    h = src.head
    doctype, segment = _ebml_header(h)
    if doctype is None:
        raise corrupt("MKV", "EBML header without a DocType", "video")
    if doctype not in ("matroska", "webm"):
        raise MediaError(f"EBML file of DocType {doctype!r} is not Matroska/WebM", problem="format")
    if segment is None:
        raise corrupt("MKV", "no Segment element", "video")
    width, height, fps, duration = _segment_headers(h, segment)
    if width is not None and height is not None:
        check_dims("MKV", width, height, "video")
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


def _ebml_header(h: bytes) -> tuple[str | None, tuple[int, int] | None]:
    """The DocType of the EBML header and the (start, end) of the Segment that follows it."""
    doctype: str | None = None
    for eid, s, e in _ebml_iter(h, 0, len(h)):
        if eid == _EBML:
            for cid, cs, ce in _ebml_iter(h, s, e):
                if cid == _DOCTYPE:
                    doctype = h[cs:ce].rstrip(b"\x00").decode("latin-1")
        elif eid == _SEGMENT:
            return doctype, (s, e)
    return doctype, None


def _segment_headers(
    h: bytes, segment: tuple[int, int]
) -> tuple[int | None, int | None, float | None, float | None]:
    """(width, height, fps, duration in seconds) from the Info and Tracks before the first Cluster."""
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    scale = 1_000_000
    raw_duration: float | None = None
    for eid, s, e in _ebml_iter(h, *segment):
        if eid == _INFO:
            for cid, cs, ce in _ebml_iter(h, s, e):
                if cid == _TIMECODE_SCALE:
                    scale = _ebml_uint(h, cs, ce) or scale
                elif cid == _DURATION and ce - cs in (4, 8):
                    raw_duration = struct.unpack(">f" if ce - cs == 4 else ">d", h[cs:ce])[0]
        elif eid == _TRACKS:
            for tid, ts, te in _ebml_iter(h, s, e):
                if tid != _TRACK_ENTRY or width is not None:
                    continue
                video = _video_track(h, ts, te)
                if video is not None:
                    track_width, track_height, fps = video
                    width = track_width if track_width is not None else width
                    height = track_height if track_height is not None else height
        elif eid == _CLUSTER:  # the headers are over
            break
    duration: float | None = None
    if raw_duration is not None and math.isfinite(raw_duration) and raw_duration >= 0:
        duration = raw_duration * scale / 1e9
    return width, height, fps, duration


def _video_track(h: bytes, ts: int, te: int) -> tuple[int | None, int | None, float | None] | None:
    """(width, height, fps) a TrackEntry states when it is a video track (None for any other track)."""
    track_type, default_ns, video = 0, 0, None
    for cid, cs, ce in _ebml_iter(h, ts, te):
        if cid == _TRACK_TYPE:
            track_type = _ebml_uint(h, cs, ce)
        elif cid == _DEFAULT_DURATION:
            default_ns = _ebml_uint(h, cs, ce)
        elif cid == _VIDEO:
            video = (cs, ce)
    if track_type != 1 or not video:
        return None
    width = height = None
    for vid, vs, ve in _ebml_iter(h, *video):
        if vid == _PIXEL_WIDTH:
            width = _ebml_uint(h, vs, ve)
        elif vid == _PIXEL_HEIGHT:
            height = _ebml_uint(h, vs, ve)
    return width, height, 1e9 / default_ns if default_ns else None
