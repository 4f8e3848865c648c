"""The action catalogue: every action segflow can call, its parameters and its documented input limits.

The facts, their sources [A]–[D], how segflow reads the limits where the documents leave room and which of
the service's own error codes a violated limit gets: `shared/VISION-API.md` §2–§4 and §7.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from segflow.errors import UnknownActionError
from segflow.values import Value

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

Ratio = tuple[int, int]
"""An exact ratio as (numerator, denominator)."""

IMAGE_FORMATS = frozenset({"JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF"})
VIDEO_FORMATS = frozenset({"MP4", "MOV", "AVI", "FLV", "MKV", "TS", "MPG"})

# The PNG depths the services take: 24-bit RGB and 32-bit RGBA (bits per pixel).
PNG_ACCEPTED_BPP = frozenset({24, 32})


class Limits(Value):
    """Documented input limits of one action. `None` means "no such limit".

    Side limits apply to width and height separately; `*_exclusive` says the bound itself is refused
    ("> 32×32" → `min_width=32, min_exclusive=True`). Short/long side limits look at min(w, h) and max(w, h).
    Ratios are exact (numerator, denominator) pairs, aspect being width / height; `segflow.validation`
    compares them as fractions (pairs here keep the `fractions` import out of the client's cold start).
    """

    formats: frozenset[str] = frozenset()
    max_bytes: int | None = None
    max_bytes_exclusive: bool = False
    min_width: int | None = None
    min_height: int | None = None
    min_exclusive: bool = False
    max_width: int | None = None
    max_height: int | None = None
    max_exclusive: bool = False
    max_short_side: int | None = None  # inclusive: "最小边小于等于2000" / 1080p
    min_long_side: int | None = None  # inclusive: "最大边大于等于32"
    max_long_side: int | None = None  # inclusive: "小于等于8000" / 1080p
    max_pixels: int | None = None
    max_pixels_exclusive: bool = False
    max_long_to_short: Ratio | None = None  # inclusive: "长边与短边的像素比例小于等于16"
    min_aspect: Ratio | None = None  # width / height, inclusive
    max_aspect: Ratio | None = None  # width / height, inclusive
    refuse_png_bpp: frozenset[int] = frozenset()  # as documented; non-empty → only PNG_ACCEPTED_BPP pass
    max_frames: int | None = None  # inclusive
    notes: tuple[str, ...] = ()  # documented advice that a header cannot check

    @property
    def max_min_side(self) -> int | None:
        """The contract's name for `max_short_side`."""
        return self.max_short_side

    @property
    def checks_resolution(self) -> bool:
        return any(
            v is not None
            for v in (
                self.min_width,
                self.min_height,
                self.max_width,
                self.max_height,
                self.max_short_side,
                self.min_long_side,
                self.max_long_side,
                self.max_pixels,
                self.max_long_to_short,
                self.min_aspect,
                self.max_aspect,
            )
        )


class ErrorCodes(Value):
    """The service's code for each kind of violation (`shared/VISION-API.md` §7 gives the reasons)."""

    format: str
    corrupt: str
    empty: str
    resolution: str
    too_large: str
    png_depth: str
    frames: str
    http_status: int = 400
    too_large_http_status: int = 400

    def for_problem(self, problem: str) -> str:
        """The code for a file that cannot be read: `problem` "format", "empty", anything else corrupt."""
        return {"format": self.format, "empty": self.empty}.get(problem, self.corrupt)


IMAGESEG_CODES = ErrorCodes(
    format="InvalidImage.Content",
    corrupt="InvalidImage.Content",
    empty="InvalidImage.Content",
    resolution="InvalidImage.Resolution",
    too_large="InvalidParameter.TooLarge",
    png_depth="InvalidImage.Content",
    frames="InvalidImage.Content",
)
VIDEOSEG_CODES = ErrorCodes(
    format="InvalidFile.Type",
    corrupt="InvalidFile.Decode",
    empty="InvalidFile.Content",
    resolution="InvalidFile.Resolution",
    too_large="InvalidFile.Content",
    png_depth="InvalidFile.Type",
    frames="InvalidFile.Content",
)
PICWISH_CODES = ErrorCodes(
    format="PicWish.InvalidImage",
    corrupt="PicWish.InvalidImage",
    empty="PicWish.InvalidImage",
    resolution="PicWish.InvalidImage",
    too_large="PicWish.TooLarge",
    png_depth="PicWish.InvalidImage",
    frames="PicWish.InvalidImage",
    too_large_http_status=413,
)

_CODES_BY_PRODUCT = {"imageseg": IMAGESEG_CODES, "videoseg": VIDEOSEG_CODES, "picwish": PICWISH_CODES}


class Action(Value):
    """One callable action: where it lives, what it takes, what it accepts."""

    name: str
    product: str  # "imageseg" | "videoseg" | "picwish"
    version: str  # "2019-12-30" | "2020-03-20" | ""
    media: str  # "image" | "video" | "none" (GetAsyncJobResult)
    url_param: str  # "ImageURL" | "VideoUrl" | "VideoURL" | "image_url" | "" (no media)
    optional_params: tuple[str, ...]
    is_async: bool  # always async; SegmentBody is async only with Async=true (see is_async_call)
    limits: Limits
    error_prefix: str  # "InvalidImage" | "InvalidFile" | "PicWish"
    required_params: tuple[str, ...] = ()  # besides url_param (GetAsyncJobResult: JobId)
    result_url_key: str | None = None  # where the result URL sits (Data or the async Result JSON)
    elements: bool = False  # the answer is Data.Elements[]
    codes: ErrorCodes = IMAGESEG_CODES

    @property
    def all_params(self) -> tuple[str, ...]:
        head = (self.url_param,) if self.url_param else ()
        return head + self.required_params + self.optional_params


_IMG = "image"
_VID = "video"
_IMAGESEG_VERSION = "2019-12-30"
_VIDEOSEG_VERSION = "2020-03-20"

_JPEG_PNG_BMP_WEBP = frozenset({"JPEG", "PNG", "BMP", "WEBP"})
_JPEG_PNG_BMP = frozenset({"JPEG", "PNG", "BMP"})
_NO_8_16_64_PNG = frozenset({8, 16, 64})

# SegmentBody, SegmentCommodity, SegmentCommonImage ([A]): JPEG JPG PNG BMP WEBP, no 8/16/64-bit PNG,
# ≤ 3 MB, < 1280×1280.
_UNDER_1280 = Limits(
    formats=_JPEG_PNG_BMP_WEBP,
    max_bytes=3 * MiB,
    max_width=1280,
    max_height=1280,
    max_exclusive=True,
    refuse_png_bpp=_NO_8_16_64_PNG,
)

# SegmentFace, SegmentHair ([A]): min side ≤ 2000, 32 ≤ max side ≤ 8000, w×h < 8,000,000,
# long/short ≤ 16, no GIF, no 8/16/64-bit PNG, ≤ 3 MB.
_FACE_001 = Limits(
    formats=_JPEG_PNG_BMP_WEBP,
    max_bytes=3 * MiB,
    max_short_side=2000,
    min_long_side=32,
    max_long_side=8000,
    max_pixels=8_000_000,
    max_pixels_exclusive=True,
    max_long_to_short=(16, 1),
    refuse_png_bpp=_NO_8_16_64_PNG,
)

# SegmentHead: [A] (as _FACE_001) and [B] (JPEG JPG PNG BMP, ≤ 3 MB, > 32×32 and < 2000×2000,
# ≤ 5 faces advised, URL without Chinese characters). The stricter of both: the 002 formats and box, plus
# every 001 rule (the aspect rule and the PNG depth still bite inside the 002 box).
_HEAD = Limits(
    formats=_JPEG_PNG_BMP,
    max_bytes=3 * MiB,
    min_width=32,
    min_height=32,
    min_exclusive=True,
    max_width=2000,
    max_height=2000,
    max_exclusive=True,
    max_short_side=2000,
    min_long_side=32,
    max_long_side=8000,
    max_pixels=8_000_000,
    max_pixels_exclusive=True,
    max_long_to_short=(16, 1),
    refuse_png_bpp=_NO_8_16_64_PNG,
    notes=("at most 5 faces advised", "URL without Chinese characters"),
)

# ParseFace ([A]): JPG JPEG PNG; 100×100 … 2048×2048; aspect 0.5–2.0; ≤ 4 MB.
_PARSE_FACE = Limits(
    formats=frozenset({"JPEG", "PNG"}),
    max_bytes=4 * MiB,
    min_width=100,
    min_height=100,
    max_width=2048,
    max_height=2048,
    min_aspect=(1, 2),
    max_aspect=(2, 1),
    notes=("one frontal face, no glasses or hat", "face ≥ 100×100 and ≥ 1/10 of the side"),
)

# SegmentFurniture ([A]): PNG JPEG JPG BMP; ≤ 4 MB; > 40×40 and < 1999×1999.
_FURNITURE = Limits(
    formats=_JPEG_PNG_BMP,
    max_bytes=4 * MiB,
    min_width=40,
    min_height=40,
    min_exclusive=True,
    max_width=1999,
    max_height=1999,
    max_exclusive=True,
)

# SegmentVehicle ([A]): JPEG JPG BMP PNG; ≤ 3 MB; > 32×32 and < 2000×2000.
_VEHICLE = Limits(
    formats=_JPEG_PNG_BMP,
    max_bytes=3 * MiB,
    min_width=32,
    min_height=32,
    min_exclusive=True,
    max_width=2000,
    max_height=2000,
    max_exclusive=True,
)

# RefineMask ([A]): JPG JPEG BMP PNG; < 3 MB ("需要小于3M", exclusive); > 32×32 and < 2000×2000.
_REFINE_MASK = Limits(
    formats=_JPEG_PNG_BMP,
    max_bytes=3 * MiB,
    max_bytes_exclusive=True,
    min_width=32,
    min_height=32,
    min_exclusive=True,
    max_width=2000,
    max_height=2000,
    max_exclusive=True,
)

# SegmentVideoBody ([C]): MP4 AVI FLV MOV; ≤ 1 GB; ≤ 2000 frames; URL without Chinese characters.
_VIDEO_BODY = Limits(
    formats=frozenset({"MP4", "AVI", "FLV", "MOV"}),
    max_bytes=1 * GiB,
    max_frames=2000,
    notes=("URL without Chinese characters",),
)

# SegmentHalfBody ([C]): MP4 MOV AVI; > 100×100 and ≤ 1080p (short side ≤ 1080, long side ≤ 1920).
_HALF_BODY = Limits(
    formats=frozenset({"MP4", "MOV", "AVI"}),
    min_width=100,
    min_height=100,
    min_exclusive=True,
    max_short_side=1080,
    max_long_side=1920,
)

# SegmentGreenScreenVideo ([C]): MP4 AVI MKV MOV FLV TS MPG; ≥ 75×75 and ≤ 2000×2000; ≤ 120 MB.
_GREEN_SCREEN = Limits(
    formats=frozenset({"MP4", "AVI", "MKV", "MOV", "FLV", "TS", "MPG"}),
    max_bytes=120 * MiB,
    min_width=75,
    min_height=75,
    max_width=2000,
    max_height=2000,
)

# PicWish ([D]): jpg jpeg bmp png webp tiff (no GIF); ≤ 15 MB (15 MB included); ≤ 4096×4096.
_PICWISH = Limits(
    formats=frozenset({"JPEG", "BMP", "PNG", "WEBP", "TIFF"}),
    max_bytes=15 * MiB,
    max_width=4096,
    max_height=4096,
    notes=("image_url at most 512 characters, downloaded within 10 s",),
)


def _imageseg(
    name: str,
    limits: Limits,
    *,
    optional: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    elements: bool = False,
    result_key: str = "ImageURL",
) -> Action:
    return Action(
        name=name,
        product="imageseg",
        version=_IMAGESEG_VERSION,
        media=_IMG,
        url_param="ImageURL",
        optional_params=optional,
        is_async=False,
        limits=limits,
        error_prefix="InvalidImage",
        required_params=required,
        result_url_key=result_key,
        elements=elements,
        codes=IMAGESEG_CODES,
    )


def _videoseg(name: str, limits: Limits, url_param: str) -> Action:
    return Action(
        name=name,
        product="videoseg",
        version=_VIDEOSEG_VERSION,
        media=_VID,
        url_param=url_param,
        optional_params=(),
        is_async=True,
        limits=limits,
        error_prefix="InvalidFile",
        result_url_key=url_param,  # the async Result JSON uses the request's spelling
        codes=VIDEOSEG_CODES,
    )


_ALL: tuple[Action, ...] = (
    _imageseg("SegmentBody", _UNDER_1280, optional=("Async",)),
    _imageseg("SegmentHead", _HEAD, optional=("ReturnForm",), elements=True),
    _imageseg("SegmentFace", _FACE_001, elements=True),
    _imageseg("SegmentHair", _FACE_001, elements=True),
    _imageseg("ParseFace", _PARSE_FACE, elements=True),
    _imageseg("SegmentCommodity", _UNDER_1280, optional=("ReturnForm",)),
    _imageseg("SegmentFurniture", _FURNITURE, elements=True, result_key="ImageUrl"),
    _imageseg("SegmentCommonImage", _UNDER_1280, optional=("ReturnForm",)),
    _imageseg("SegmentVehicle", _VEHICLE, elements=True),
    # RefineMask needs the coarse mask of the same image: required, not optional.
    _imageseg("RefineMask", _REFINE_MASK, required=("MaskImageURL",), elements=True),
    _videoseg("SegmentVideoBody", _VIDEO_BODY, "VideoUrl"),
    _videoseg("SegmentHalfBody", _HALF_BODY, "VideoUrl"),
    _videoseg("SegmentGreenScreenVideo", _GREEN_SCREEN, "VideoURL"),
    Action(
        name="GetAsyncJobResult",
        product="videoseg",
        version=_VIDEOSEG_VERSION,
        media="none",
        url_param="",
        optional_params=(),
        is_async=False,
        limits=Limits(),
        error_prefix="InvalidParameter",
        required_params=("JobId",),
        codes=VIDEOSEG_CODES,
    ),
    Action(
        name="PicWish",
        product="picwish",
        version="",
        media=_IMG,
        url_param="image_url",
        optional_params=("type", "output_type", "crop", "format", "bg_color"),
        is_async=False,
        limits=_PICWISH,
        error_prefix="PicWish",
        result_url_key="image",
        codes=PICWISH_CODES,
    ),
)

ACTIONS: Mapping[str, Action] = MappingProxyType({a.name: a for a in _ALL})
MEDIA_ACTIONS: tuple[str, ...] = tuple(a.name for a in _ALL if a.media in (_IMG, _VID))


def get_action(name: str) -> Action:
    """The catalogue entry for `name`; `UnknownActionError` lists the known names otherwise."""
    try:
        return ACTIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIONS))
        raise UnknownActionError(f"unknown action {name!r}; known actions: {known}") from None


def is_async_call(action: Action, params: Mapping[str, str]) -> bool:
    """True when the call answers with a job to poll: every videoseg action, SegmentBody with Async=true."""
    if action.is_async:
        return True
    if "Async" in action.optional_params:
        return str(params.get("Async", "")).strip().lower() == "true"
    return False


def codes_for_product(product: str) -> ErrorCodes:
    """The error codes a product uses (defaults to imageseg's)."""
    return _CODES_BY_PRODUCT.get(product, IMAGESEG_CODES)


def codes_for_media(media: str | None) -> ErrorCodes:
    """The codes of a file problem found before the action is known (the probe of an unreadable file):
    imageseg's for a corrupt image, videoseg's `InvalidFile.*` (about files in general) for anything else,
    including a file of unknown format; `segflow.validation.media_error_for_action` swaps in the action's
    own once it is known."""
    return IMAGESEG_CODES if media == "image" else VIDEOSEG_CODES
