"""MPEG-TS and MPEG-PS: the size of an MPEG-1/2 sequence header or an H.264 SPS in the first 64 KiB."""

from __future__ import annotations

from segflow.media.base import MediaInfo, Source

_TS_PACKET = 188


def parse_ts(src: Source) -> MediaInfo:
    h = src.head
    streams: dict[int, bytearray] = {}
    for i in range(len(h) // _TS_PACKET):
        pkt = h[i * _TS_PACKET : i * _TS_PACKET + _TS_PACKET]
        if pkt[0] != 0x47:
            break  # lost sync: the first packets were fine (sniffed), use what they carry
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        afc = (pkt[3] >> 4) & 3
        start = 4
        if afc & 2:
            start += 1 + pkt[4]
        if afc & 1 and pid not in (0, 0x1FFF) and start < _TS_PACKET:
            streams.setdefault(pid, bytearray()).extend(pkt[start:])
    for payload in streams.values():
        found = _video_dims(bytes(payload))
        if found:
            return _stream_info("TS", found)
    return MediaInfo(format="TS", media="video", width=None, height=None)


def parse_ps(src: Source) -> MediaInfo:
    found = _video_dims(src.head)
    if found:
        return _stream_info("MPG", found)
    return MediaInfo(format="MPG", media="video", width=None, height=None)


def _stream_info(fmt: str, found: tuple[int, int, float | None, str]) -> MediaInfo:
    width, height, fps, codec = found
    return MediaInfo(format=fmt, media="video", width=width, height=height, fps=fps, brand=codec)


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


# profile_idc values whose SPS carries chroma format, bit depths and scaling matrices (H.264 7.3.2.1.1)
_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def _h264_sps_dims(raw: bytes) -> tuple[int, int] | None:
    """The cropped picture size an H.264 SPS (after the NAL header byte) declares; None when unreadable."""
    rbsp = raw.replace(b"\x00\x00\x03", b"\x00\x00")
    try:
        r = _Bits(rbsp)
        profile = r.bits(8)
        r.bits(16)  # constraint flags, level
        r.ue()
        chroma, separate = _chroma_format(r) if profile in _HIGH_PROFILES else (1, 0)
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


def _chroma_format(r: _Bits) -> tuple[int, int]:
    """(chroma_format_idc, separate_colour_plane_flag) of a high-profile SPS; skips what follows them."""
    chroma = r.ue()
    separate = r.bit() if chroma == 3 else 0
    r.ue()  # bit_depth_luma_minus8
    r.ue()  # bit_depth_chroma_minus8
    r.bit()  # qpprime_y_zero_transform_bypass_flag
    if r.bit():  # scaling matrices
        for i in range(8 if chroma != 3 else 12):
            if r.bit():
                last = nxt = 8
                for _ in range(16 if i < 6 else 64):
                    if nxt:
                        nxt = (last + r.se()) % 256
                    last = nxt or last
    return chroma, separate
