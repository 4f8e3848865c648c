"""FLV: size, rate and duration from the onMetaData script tag (AMF0) in the first 64 KiB."""

from __future__ import annotations

import math
import struct

from segflow.media.base import MediaInfo, Source, check_dims, corrupt, need, u32be


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


def parse_flv(src: Source) -> MediaInfo:
    h = src.head
    need(h, 13, "FLV", "header", "video")
    meta = _metadata(h)
    width, height = _num(meta.get("width")), _num(meta.get("height"))
    fps, duration = _num(meta.get("framerate")), _num(meta.get("duration"))
    if width is not None and height is not None:
        check_dims("FLV", int(width), int(height), "video")
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


def _metadata(h: bytes) -> dict[str, object]:
    """The onMetaData object of the first script tag in the head; empty when there is none."""
    pos = u32be(h, 5) + 4
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
                raise corrupt("FLV", f"unreadable onMetaData ({exc})", "video") from exc
            break
        pos += 11 + size + 4
    return meta


def _num(value: object) -> float | None:
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    ):
        return float(value)
    return None
