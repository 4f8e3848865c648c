"""What every container parser shares: the result, the error, the counted reader and the header helpers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

from segflow.catalogue import codes_for_media
from segflow.errors import InputValidationError
from segflow.values import Value

ReadAt: TypeAlias = "Callable[[int, int], bytes]"  # quoted: typing builds nothing at import

HEAD_BYTES = 64 * 1024
MAX_READS = 64  # read_at calls per probe, the head included
MAX_MOOV_BYTES = 64 * 1024 * 1024  # an MP4/MOV `moov` box read whole, at most


class MediaError(InputValidationError):
    """The bytes are not a readable image or video: `problem` is "format", "corrupt" or "empty".

    The code is the one `segflow.catalogue.codes_for_media` gives for the problem while the action is
    still unknown; `segflow.validation.media_error_for_action` swaps in the action's own once it is.
    """

    def __init__(
        self, message: str, *, problem: str, media: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code or codes_for_media(media).for_problem(problem))
        self.problem = problem
        self.media = media


class MediaInfo(Value):
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


class Source:
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
        if self.reads > MAX_READS:
            # every read may be a ranged GET: a header that needs this many is broken or hostile
            raise MediaError(
                f"the headers need more than {MAX_READS} separate reads; the file looks corrupt",
                problem="corrupt",
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


def corrupt(fmt: str, message: str, media: str = "image") -> MediaError:
    return MediaError(f"{fmt}: {message}", problem="corrupt", media=media)


def need(data: bytes, n: int, fmt: str, what: str, media: str = "image") -> None:
    if len(data) < n:
        raise corrupt(fmt, f"truncated {what} ({len(data)} of {n} bytes)", media)


def check_dims(fmt: str, width: int, height: int, media: str = "image") -> None:
    if width <= 0 or height <= 0:
        raise corrupt(fmt, f"header declares an empty picture ({width}×{height})", media)


def u16be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 2], "big")


def u32be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "big")


def u64be(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 8], "big")


def u16le(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 2], "little")


def u32le(b: bytes, o: int) -> int:
    return int.from_bytes(b[o : o + 4], "little")
