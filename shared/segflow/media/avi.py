"""AVI: the RIFF `hdrl` list in the first 64 KiB (main header, video stream header, OpenDML frame count)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

from segflow.media.base import MediaInfo, Source, check_dims, corrupt, u32le


def _riff_chunks(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    pos = start
    while pos + 8 <= end:
        cid, size = data[pos : pos + 4], u32le(data, pos + 4)
        yield cid, pos + 8, min(pos + 8 + size, end)
        pos += 8 + size + (size & 1)


def parse_avi(src: Source) -> MediaInfo:
    h = src.head
    hdrl: tuple[int, int] | None = None
    for cid, s, e in _riff_chunks(h, 12, len(h)):
        if cid == b"LIST" and h[s : s + 4] == b"hdrl":
            hdrl = (s + 4, e)
            break
    if hdrl is None:
        raise corrupt("AVI", "no hdrl header list in the first 64 KiB", "video")
    width = height = total = 0
    usec = 0
    strh_frames = dmlh_frames = 0
    rate = 0.0
    for cid, s, e in _riff_chunks(h, *hdrl):
        if cid == b"avih" and e - s >= 40:
            usec, total = u32le(h, s), u32le(h, s + 16)
            width, height = u32le(h, s + 32), abs(struct.unpack_from("<i", h, s + 36)[0])
        elif cid == b"LIST" and h[s : s + 4] == b"strl":
            for sid, ss, se in _riff_chunks(h, s + 4, e):
                if sid == b"strh" and se - ss >= 36 and h[ss : ss + 4] == b"vids" and not strh_frames:
                    scale, rate_num, length = u32le(h, ss + 20), u32le(h, ss + 24), u32le(h, ss + 32)
                    strh_frames = length
                    rate = rate_num / scale if scale else 0.0
        elif cid == b"LIST" and h[s : s + 4] == b"odml":
            for sid, ss, se in _riff_chunks(h, s + 4, e):
                if sid == b"dmlh" and se - ss >= 4:
                    dmlh_frames = u32le(h, ss)
    if not width and not height:
        raise corrupt("AVI", "no main AVI header (avih)", "video")
    check_dims("AVI", width, height, "video")
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
