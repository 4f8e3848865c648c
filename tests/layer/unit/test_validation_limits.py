"""validate_object on real files at and around every documented limit (VISION-API.md §2–§4).

Each case id names the action and the limit it probes; `None` as the expected kind means the file passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import pytest

from segflow.catalogue import MiB, get_action
from segflow.errors import InputValidationError
from segflow.media import MediaError, probe_media
from segflow.validation import LimitViolationError, media_error_for_action, validate_object
from tests.support.media_files import (
    SparseFile,
    cached_video,
    mp4_file,
    pillow_image,
    png,
    reader,
    sparse_mp4,
)

GiB = 1024 * MiB


@dataclass(frozen=True)
class Case:
    id: str  # "<Action>: <limit as documented> — <what this file is>"
    action: str
    make: Callable[[], SparseFile]
    kind: str | None  # expected violation kind, None = accepted
    code: str | None = None


@lru_cache(maxsize=256)
def _png(width: int, height: int, depth: int = 8, color_type: int = 2) -> bytes:
    return png(width, height, depth=depth, color_type=color_type)


def img(width: int, height: int, depth: int = 8, color_type: int = 2) -> Callable[[], SparseFile]:
    return lambda: reader(_png(width, height, depth, color_type))


def pil(fmt: str, width: int, height: int, mode: str = "RGB") -> Callable[[], SparseFile]:
    return lambda: reader(pillow_image(fmt, (width, height), mode))


def sized_png(total: int) -> Callable[[], SparseFile]:
    return lambda: reader(png(64, 64, total_size=total))


def vid(fmt: str, codec: str, width: int, height: int, frames: int = 2) -> Callable[[], SparseFile]:
    return lambda: reader(cached_video(fmt, codec, width, height, frames))


def mp4(width: int, height: int, frames: int = 10) -> Callable[[], SparseFile]:
    return lambda: reader(mp4_file(width, height, frames))


def big_mp4(total: int) -> Callable[[], SparseFile]:
    return lambda: sparse_mp4(total, width=640, height=360, frames=100)


R, B, F, P, N = "resolution", "bytes", "format", "png_depth", "frames"

VB, HB, GS = "SegmentVideoBody", "SegmentHalfBody", "SegmentGreenScreenVideo"
IMG_RES, TOO_LARGE = "InvalidImage.Resolution", "InvalidParameter.TooLarge"
UNDER_1280 = ("SegmentBody", "SegmentCommodity", "SegmentCommonImage")

CASES: list[Case] = [
    # "< 1280×1280" (SegmentBody, SegmentCommodity, SegmentCommonImage): each side exclusive
    *(Case(f"{a}: < 1280×1280 — 1279×1279", a, img(1279, 1279), None) for a in UNDER_1280),
    *(Case(f"{a}: < 1280×1280 — 1280×720", a, img(1280, 720), R, IMG_RES) for a in UNDER_1280),
    *(Case(f"{a}: < 1280×1280 — 720×1280", a, img(720, 1280), R) for a in UNDER_1280),
    # SegmentHead: 002 "> 32×32 and < 2000×2000" and 001 "long/short ≤ 16"
    Case("SegmentHead: > 32×32 — 32×100", "SegmentHead", img(32, 100), R),
    Case("SegmentHead: > 32×32 — 33×33", "SegmentHead", img(33, 33), None),
    Case("SegmentHead: < 2000×2000 — 1999×1999", "SegmentHead", img(1999, 1999), None),
    Case("SegmentHead: < 2000×2000 — 2000×1000", "SegmentHead", img(2000, 1000), R),
    Case("SegmentHead: long/short ≤ 16 (001) — 33×1999", "SegmentHead", img(1999, 33), R),
    Case("SegmentHead: long/short ≤ 16 (001) — 125×1999", "SegmentHead", img(125, 1999), None),
    Case("SegmentHead: 002 formats have no WEBP", "SegmentHead", pil("WEBP", 100, 100), F),
    # SegmentFace / SegmentHair (001)
    *(
        case
        for a in ("SegmentFace", "SegmentHair")
        for case in (
            Case(f"{a}: min side ≤ 2000 — 2000×3000", a, img(2000, 3000), None),
            Case(f"{a}: min side ≤ 2000 — 2001×2001", a, img(2001, 2001), R),
            Case(f"{a}: max side ≥ 32 — 31×31", a, img(31, 31), R),
            Case(f"{a}: max side ≥ 32 — 32×32", a, img(32, 32), None),
            Case(f"{a}: max side ≤ 8000 — 8000×500", a, img(8000, 500), None),
            Case(f"{a}: max side ≤ 8000 — 8001×501", a, img(8001, 501), R),
            Case(f"{a}: w×h < 8,000,000 — 4000×2000", a, img(4000, 2000), R),
            Case(f"{a}: w×h < 8,000,000 — 3999×2000", a, img(3999, 2000), None),
            Case(f"{a}: long/short ≤ 16 — 1600×100", a, img(1600, 100), None),
            Case(f"{a}: long/short ≤ 16 — 1700×100", a, img(1700, 100), R),
            Case(f"{a}: WEBP accepted", a, pil("WEBP", 100, 100), None),
        )
    ),
    # ParseFace: 100×100 … 2048×2048, aspect 0.5–2.0, JPG JPEG PNG only
    Case("ParseFace: ≥ 100×100 — 100×100", "ParseFace", img(100, 100), None),
    Case("ParseFace: ≥ 100×100 — 99×100", "ParseFace", img(99, 100), R),
    Case("ParseFace: ≤ 2048×2048 — 2048×2048", "ParseFace", img(2048, 2048), None),
    Case("ParseFace: ≤ 2048×2048 — 2049×1100", "ParseFace", img(2049, 1100), R),
    Case("ParseFace: aspect ≤ 2.0 — 200×100", "ParseFace", img(200, 100), None),
    Case("ParseFace: aspect ≤ 2.0 — 201×100", "ParseFace", img(201, 100), R),
    Case("ParseFace: aspect ≥ 0.5 — 100×200", "ParseFace", img(100, 200), None),
    Case("ParseFace: aspect ≥ 0.5 — 100×201", "ParseFace", img(100, 201), R),
    Case("ParseFace: JPG JPEG PNG — BMP refused", "ParseFace", pil("BMP", 300, 300), F),
    Case("ParseFace: JPG JPEG PNG — JPEG accepted", "ParseFace", pil("JPEG", 300, 300), None),
    # SegmentFurniture: > 40×40 and < 1999×1999
    Case("SegmentFurniture: > 40×40 — 40×40", "SegmentFurniture", img(40, 40), R),
    Case("SegmentFurniture: > 40×40 — 41×41", "SegmentFurniture", img(41, 41), None),
    Case("SegmentFurniture: < 1999×1999 — 1998×1998", "SegmentFurniture", img(1998, 1998), None),
    Case("SegmentFurniture: < 1999×1999 — 1999×1000", "SegmentFurniture", img(1999, 1000), R),
    # SegmentVehicle, RefineMask: > 32×32 and < 2000×2000
    *(
        case
        for a in ("SegmentVehicle", "RefineMask")
        for case in (
            Case(f"{a}: > 32×32 — 32×32", a, img(32, 32), R),
            Case(f"{a}: > 32×32 — 33×33", a, img(33, 33), None),
            Case(f"{a}: < 2000×2000 — 1999×1999", a, img(1999, 1999), None),
            Case(f"{a}: < 2000×2000 — 1000×2000", a, img(1000, 2000), R),
            Case(f"{a}: no WEBP", a, pil("WEBP", 100, 100), F),
        )
    ),
    # PicWish: ≤ 4096×4096, jpg jpeg bmp png webp tiff, no GIF
    Case("PicWish: ≤ 4096×4096 — 4096×4096", "PicWish", img(4096, 4096), None),
    Case("PicWish: ≤ 4096×4096 — 4097×10", "PicWish", img(4097, 10), R, "PicWish.InvalidImage"),
    Case("PicWish: tiff accepted", "PicWish", pil("TIFF", 100, 100), None),
    Case("PicWish: webp accepted", "PicWish", pil("WEBP", 100, 100), None),
    Case("PicWish: no GIF", "PicWish", pil("GIF", 100, 100, "P"), F, "PicWish.InvalidImage"),
    Case("PicWish: any PNG depth (no PNG rule)", "PicWish", img(100, 100, 8, 3), None),
    # GIF and TIFF are refused by every imageseg action
    *(
        Case(f"{a}: no GIF", a, pil("GIF", 100, 100, "P"), F, "InvalidImage.Content")
        for a in (*UNDER_1280, "SegmentHead", "SegmentFace", "SegmentHair", "ParseFace", "SegmentVehicle")
    ),
    *(Case(f"{a}: no TIFF", a, pil("TIFF", 100, 100), F) for a in UNDER_1280),
    # "No 8/16/64-bit PNG" (bits per pixel): 24 and 32 pass, the rest is refused where the rule applies
    *(
        Case(f"{a}: no {label} PNG — {name}", a, img(100, 100, depth, ct), expected, code)
        for a in ("SegmentBody", "SegmentHead", "SegmentFace")
        for (label, name, depth, ct, expected, code) in (
            ("8-bit", "palette", 8, 3, P, "InvalidImage.Content"),
            ("8-bit", "grey", 8, 0, P, None),
            ("16-bit", "grey+alpha", 8, 4, P, None),
            ("16-bit", "16-bit grey", 16, 0, P, None),
            ("64-bit", "16-bit RGBA", 16, 6, P, None),
            ("8/16/64-bit", "48-bit RGB (stricter reading)", 16, 2, P, None),
            ("8/16/64-bit", "1-bit grey (stricter reading)", 1, 0, P, None),
            ("8/16/64-bit", "24-bit RGB accepted", 8, 2, None, None),
            ("8/16/64-bit", "32-bit RGBA accepted", 8, 6, None, None),
        )
    ),
    Case("SegmentVehicle: no PNG depth rule — 16-bit grey", "SegmentVehicle", img(100, 100, 16, 0), None),
    # File size: "≤ 3M", "< 3M" (RefineMask), "≤ 4M", "≤ 15MB"
    Case("SegmentBody: ≤ 3 MB — exactly 3 MiB", "SegmentBody", sized_png(3 * MiB), None),
    Case("SegmentBody: ≤ 3 MB — 3 MiB + 1", "SegmentBody", sized_png(3 * MiB + 1), B, TOO_LARGE),
    Case("SegmentHead: ≤ 3 MB — 3 MiB + 1", "SegmentHead", sized_png(3 * MiB + 1), B),
    Case("RefineMask: < 3 MB — exactly 3 MiB", "RefineMask", sized_png(3 * MiB), B),
    Case("RefineMask: < 3 MB — 3 MiB - 1", "RefineMask", sized_png(3 * MiB - 1), None),
    Case("ParseFace: ≤ 4 MB — exactly 4 MiB", "ParseFace", sized_png(4 * MiB), R),  # 64×64 < 100×100
    Case("SegmentFurniture: ≤ 4 MB — exactly 4 MiB", "SegmentFurniture", sized_png(4 * MiB), None),
    Case("SegmentFurniture: ≤ 4 MB — 4 MiB + 1", "SegmentFurniture", sized_png(4 * MiB + 1), B),
    Case("PicWish: ≤ 15 MB — exactly 15 MiB", "PicWish", sized_png(15 * MiB), None),
    Case("PicWish: ≤ 15 MB — 15 MiB + 1", "PicWish", sized_png(15 * MiB + 1), B, "PicWish.TooLarge"),
    # Videos: SegmentVideoBody — MP4 AVI FLV MOV; ≤ 1 GB; ≤ 2000 frames
    Case("SegmentVideoBody: ≤ 2000 frames — 2000", VB, mp4(640, 360, 2000), None),
    Case("SegmentVideoBody: ≤ 2000 frames — 2001", VB, mp4(640, 360, 2001), N, "InvalidFile.Content"),
    Case("SegmentVideoBody: ≤ 1 GB — exactly 1 GiB", VB, big_mp4(GiB), None),
    Case("SegmentVideoBody: ≤ 1 GB — 1 GiB + 1", VB, big_mp4(GiB + 1), B, "InvalidFile.Content"),
    Case("SegmentVideoBody: MP4 (real)", VB, vid("mp4", "libx264", 96, 64, 3), None),
    Case("SegmentVideoBody: MOV (real)", VB, vid("mov", "libx264", 96, 64), None),
    Case("SegmentVideoBody: AVI (real)", VB, vid("avi", "mpeg4", 96, 64), None),
    Case("SegmentVideoBody: FLV (real)", VB, vid("flv", "flv", 96, 64), None),
    Case("SegmentVideoBody: no MKV", VB, vid("matroska", "libx264", 96, 64), F, "InvalidFile.Type"),
    Case("SegmentVideoBody: no TS", VB, vid("mpegts", "libx264", 96, 64), F),
    Case("SegmentVideoBody: an image is not a video", VB, img(64, 64), F, "InvalidFile.Type"),
    # SegmentHalfBody — MP4 MOV AVI; > 100×100 and ≤ 1080p (short ≤ 1080, long ≤ 1920)
    Case("SegmentHalfBody: > 100×100 — 100×100", HB, vid("mp4", "libx264", 100, 100), R),
    Case("SegmentHalfBody: > 100×100 — 101×101", HB, vid("mp4", "libx264", 101, 101), None),
    Case("SegmentHalfBody: ≤ 1080p — 1920×1080", HB, vid("mp4", "libx264", 1920, 1080, 1), None),
    Case("SegmentHalfBody: ≤ 1080p — 1080×1920", HB, mp4(1080, 1920), None),
    Case("SegmentHalfBody: ≤ 1080p — 1921×1080", HB, mp4(1921, 1080), R, "InvalidFile.Resolution"),
    Case("SegmentHalfBody: ≤ 1080p — 1920×1081", HB, mp4(1920, 1081), R),
    Case("SegmentHalfBody: ≤ 1080p — 3840×2160", HB, mp4(3840, 2160), R),
    Case("SegmentHalfBody: AVI (real)", HB, vid("avi", "mpeg4", 128, 128), None),
    Case("SegmentHalfBody: no FLV", HB, vid("flv", "flv", 128, 128), F),
    # SegmentGreenScreenVideo — MP4 AVI MKV MOV FLV TS MPG; ≥ 75×75 and ≤ 2000×2000; ≤ 120 MB
    Case("SegmentGreenScreenVideo: ≥ 75×75 — 74×74", GS, vid("mp4", "libx264", 74, 74), R),
    Case("SegmentGreenScreenVideo: ≥ 75×75 — 75×75", GS, vid("mp4", "libx264", 75, 75), None),
    Case("SegmentGreenScreenVideo: ≤ 2000×2000 — 2000×2000", GS, mp4(2000, 2000), None),
    Case("SegmentGreenScreenVideo: ≤ 2000×2000 — 2001×2000", GS, mp4(2001, 2000), R),
    Case("SegmentGreenScreenVideo: ≤ 120 MB — 120 MiB", GS, big_mp4(120 * MiB), None),
    Case("SegmentGreenScreenVideo: ≤ 120 MB — 120 MiB + 1", GS, big_mp4(120 * MiB + 1), B),
    *(
        Case(f"SegmentGreenScreenVideo: {label} (real)", GS, vid(fmt, codec, 96, 96), None)
        for label, fmt, codec in (
            ("MKV", "matroska", "libx264"),
            ("WebM is Matroska", "webm", "libvpx"),
            ("TS", "mpegts", "libx264"),
            ("MPG", "mpeg", "mpeg2video"),
            ("FLV", "flv", "flv"),
            ("AVI", "avi", "mpeg4"),
            ("MOV", "mov", "libx264"),
        )
    ),
    Case("SegmentGreenScreenVideo: TS 74×74 (size from the SPS)", "SegmentGreenScreenVideo",
         vid("mpegts", "libx264", 74, 74), R),
    Case("SegmentGreenScreenVideo: MPG 2002×2000 (sequence header)", "SegmentGreenScreenVideo",
         vid("mpeg", "mpeg2video", 2002, 2000, 1), R),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_file_at_a_documented_limit_is_accepted_or_refused_with_the_service_code(case: Case) -> None:
    action = get_action(case.action)
    read_at = case.make()
    if case.kind is None:
        info = validate_object(action, read_at, read_at.size)
        assert info.bytes_read <= 64 * 1024 + 16 * 1024
        return
    with pytest.raises(LimitViolationError) as err:
        validate_object(action, read_at, read_at.size)
    assert err.value.kind == case.kind, err.value.message
    assert err.value.code == (case.code or getattr(action.codes, _CODE_FIELD[case.kind]))
    assert case.action in err.value.message


_CODE_FIELD = {R: "resolution", B: "too_large", F: "format", P: "png_depth", N: "frames"}


def test_resolution_message_names_the_limit_and_the_measured_size() -> None:
    """SegmentCommonImage: < 1280×1280."""
    data = png(1280, 720)
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("SegmentCommonImage"), reader(data), len(data))
    assert err.value.message == "SegmentCommonImage needs width and height < 1280 px; this image is 1280×720"
    assert err.value.http_status == 400


def test_pixel_count_message_shows_the_count() -> None:
    """SegmentFace: w×h < 8,000,000."""
    data = png(4000, 2000)
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("SegmentFace"), reader(data), len(data))
    assert "< 8,000,000 pixels" in err.value.message
    assert "8,000,000 pixels)" in err.value.message


def test_size_message_and_status_for_picwish() -> None:
    """PicWish: ≤ 15 MB (state -5, HTTP 413)."""
    read_at = sparse_mp4(15 * MiB + 1)
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("PicWish"), read_at, read_at.size)
    assert err.value.http_status == 413
    assert "15 MB" in err.value.message
    assert "15,728,641 bytes" in err.value.message


def test_oversized_object_is_refused_before_anything_is_read() -> None:
    """SegmentVideoBody: ≤ 1 GB — a 1.2 GB object costs no read at all."""
    read_at = sparse_mp4(int(1.2 * GiB))
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("SegmentVideoBody"), read_at, read_at.size)
    assert err.value.kind == "bytes"
    assert read_at.bytes_read == 0


def test_several_violations_are_all_reported_the_first_gives_the_code() -> None:
    """SegmentBody: ≤ 3 MB and < 1280×1280 and no 8-bit PNG, all broken at once."""
    data = png(1300, 1300, depth=8, color_type=0, pixels=False)
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("SegmentBody"), reader(data), 3 * MiB + 5)
    assert err.value.kind == "bytes"
    # the byte limit is checked before reading, so only it is reported here
    with pytest.raises(LimitViolationError) as err2:
        validate_object(get_action("SegmentBody"), reader(data), len(data))
    assert err2.value.kinds == {"png_depth", "resolution"}
    assert err2.value.code == "InvalidImage.Content"


def test_gif_renamed_to_jpg_is_refused_as_gif() -> None:
    """SegmentBody: JPEG JPG PNG BMP WEBP — the name says .jpg, the bytes say GIF."""
    data = pillow_image("GIF", (50, 50), "P")
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("SegmentBody"), reader(data), len(data))
    assert err.value.message == "SegmentBody accepts BMP, JPEG, PNG, WEBP; this file is GIF"


@pytest.mark.parametrize(
    ("action", "data", "kind", "code"),
    [
        ("SegmentBody", b"", "empty", "InvalidImage.Content"),
        ("SegmentVideoBody", b"", "empty", "InvalidFile.Content"),
        ("PicWish", b"", "empty", "PicWish.InvalidImage"),
        ("SegmentBody", b"not an image at all", "format", "InvalidImage.Content"),
        ("SegmentVideoBody", b"not a video at all", "format", "InvalidFile.Type"),
        ("PicWish", b"not an image at all", "format", "PicWish.InvalidImage"),
        ("SegmentBody", png(10, 10)[:20], "corrupt", "InvalidImage.Content"),
        ("SegmentVideoBody", mp4_file(64, 64, 5)[:100], "corrupt", "InvalidFile.Decode"),
        ("SegmentGreenScreenVideo", mp4_file(64, 64, 5)[:100], "corrupt", "InvalidFile.Decode"),
    ],
    ids=lambda v: v if isinstance(v, str) else f"{len(v)}B",
)
def test_unreadable_files_get_the_actions_own_code(action: str, data: bytes, kind: str, code: str) -> None:
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action(action), reader(data), len(data))
    assert (err.value.kind, err.value.code) == (kind, code)
    assert err.value.message.startswith(f"{action}: ")


def test_huge_declared_png_is_refused_for_resolution_without_allocation() -> None:
    """SegmentCommonImage: < 1280×1280 — an IHDR that says 100000×100000."""
    data = png(100_000, 100_000, pixels=False)
    with pytest.raises(LimitViolationError) as err:
        validate_object(get_action("SegmentCommonImage"), reader(data), len(data))
    assert err.value.kind == "resolution"
    assert "100000×100000" in err.value.message


def test_action_without_media_cannot_validate_a_file() -> None:
    with pytest.raises(InputValidationError):
        validate_object(get_action("GetAsyncJobResult"), reader(png(10, 10)), 100)


def test_probe_errors_are_mapped_to_an_action_known_later() -> None:
    """After routing, a probe failure takes the product's code (videoseg: InvalidFile.Decode)."""
    data = mp4_file(64, 64, 5)[:100]
    with pytest.raises(MediaError) as err:
        probe_media(reader(data), len(data))
    mapped = media_error_for_action(get_action("SegmentHalfBody"), err.value)
    assert (mapped.kind, mapped.code) == ("corrupt", "InvalidFile.Decode")
    assert mapped.message.startswith("SegmentHalfBody: MP4: moov box")
