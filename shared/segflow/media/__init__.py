"""Format sniffing and header parsing through a "read bytes at offset" callable.

The format comes from the magic bytes, never the file name; the sniffing and dispatch are here, `base`
holds `MediaInfo`, `MediaError` and the counted reader, and one module per container family parses
(`images`, `isobmff`, `avi`, `flv`, `matroska`, `mpeg`), each imported the first time a file of that
family is probed: an instance that only ever sees photos never loads the video parsers.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TypeAlias

from segflow.media.base import HEAD_BYTES, MAX_MOOV_BYTES, MediaError, MediaInfo, ReadAt, Source, u32be, u32le
from segflow.values import replace

__all__ = ["HEAD_BYTES", "MAX_MOOV_BYTES", "MediaError", "MediaInfo", "ReadAt", "probe_media"]

Sniff: TypeAlias = "Callable[[bytes], bool]"  # quoted: typing builds nothing at import


def probe_media(read_at: ReadAt, size: int) -> MediaInfo:
    """Sniff the format of an object of `size` bytes and parse its header.

    Reads the first 64 KiB once; beyond that only small reads for box/segment headers and, for an MP4/MOV
    whose `moov` sits at the end, the `moov` box itself (capped at 64 MiB). Nothing is allocated from a
    declared dimension, so a header that claims 100000×100000 pixels costs nothing.

    Raises `MediaError` (an `InputValidationError`) for an empty, unknown, truncated or corrupt file.
    """
    if size <= 0:
        raise MediaError("the file is empty (0 bytes)", problem="empty")
    src = Source(read_at, size)
    head = src.head
    if not head:
        raise MediaError("the file is empty (no bytes could be read)", problem="empty")
    for sniff, family, parser in _PARSERS:
        if sniff(head):
            parse: Callable[[Source], MediaInfo] = getattr(_family(family), parser)
            return replace(parse(src), bytes_read=src.bytes_read)
    raise MediaError(
        f"unknown file format (magic bytes {head[:8].hex(' ')}); expected an image (JPEG, PNG, BMP, WEBP, "
        "GIF, TIFF) or a video (MP4, MOV, AVI, FLV, MKV, MPEG-TS, MPEG-PS)",
        problem="format",
    )


def _is_jpeg(h: bytes) -> bool:
    return h[:3] == b"\xff\xd8\xff"


def _is_png(h: bytes) -> bool:
    return h[:8] == b"\x89PNG\r\n\x1a\n"


def _is_gif(h: bytes) -> bool:
    return h[:6] in (b"GIF87a", b"GIF89a")


def _is_bmp(h: bytes) -> bool:
    return h[:2] == b"BM" and len(h) >= 18 and u32le(h, 14) in (12, 16, 40, 52, 56, 64, 108, 124)


def _is_webp(h: bytes) -> bool:
    return h[:4] == b"RIFF" and h[8:12] == b"WEBP"


def _is_tiff(h: bytes) -> bool:
    return h[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


_MP4_TOP = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"moof"})


def _is_mp4(h: bytes) -> bool:
    if len(h) < 8:
        return False
    size = u32be(h, 0)
    return h[4:8] in _MP4_TOP and (size in (0, 1) or size >= 8)


def _is_avi(h: bytes) -> bool:
    return h[:4] == b"RIFF" and h[8:12] in (b"AVI ", b"AVIX")


def _is_flv(h: bytes) -> bool:
    return h[:3] == b"FLV" and len(h) >= 4 and h[3] == 1


def _is_mkv(h: bytes) -> bool:
    return h[:4] == b"\x1a\x45\xdf\xa3"


def _is_ts(h: bytes) -> bool:
    if len(h) < 188 or h[0] != 0x47:
        return False
    packets = min(len(h) // 188, 8)
    return all(h[i * 188] == 0x47 for i in range(packets))


def _is_ps(h: bytes) -> bool:
    return h[:4] == b"\x00\x00\x01\xba"


def _family(name: str) -> ModuleType:
    """The parser module of a container family, imported on first use (plain imports, so the layer
    builder's import closure still sees every one)."""
    if name == "images":
        import segflow.media.images as images

        return images
    if name == "isobmff":
        import segflow.media.isobmff as isobmff

        return isobmff
    if name == "avi":
        import segflow.media.avi as avi

        return avi
    if name == "flv":
        import segflow.media.flv as flv

        return flv
    if name == "matroska":
        import segflow.media.matroska as matroska

        return matroska
    import segflow.media.mpeg as mpeg

    return mpeg


# Order matters: RIFF is told apart by its form type, TS only after everything with a real magic.
_PARSERS: tuple[tuple[Sniff, str, str], ...] = (
    (_is_jpeg, "images", "parse_jpeg"),
    (_is_png, "images", "parse_png"),
    (_is_gif, "images", "parse_gif"),
    (_is_webp, "images", "parse_webp"),
    (_is_avi, "avi", "parse_avi"),
    (_is_bmp, "images", "parse_bmp"),
    (_is_tiff, "images", "parse_tiff"),
    (_is_flv, "flv", "parse_flv"),
    (_is_mkv, "matroska", "parse_mkv"),
    (_is_ps, "mpeg", "parse_ps"),
    (_is_mp4, "isobmff", "parse_mp4"),
    (_is_ts, "mpeg", "parse_ts"),
)
