"""The catalogue holds every action of the spec with its parameters, sync/async nature and limits."""

from __future__ import annotations

import pytest

from segflow.catalogue import ACTIONS, MiB, get_action, is_async_call
from segflow.errors import UnknownActionError

SPEC_ACTIONS = {
    # name: (product, version, url parameter, other parameters) — VISION-API.md §2, §3 and §4
    "SegmentBody": ("imageseg", "2019-12-30", "ImageURL", ("Async",)),
    "SegmentHead": ("imageseg", "2019-12-30", "ImageURL", ("ReturnForm",)),
    "SegmentFace": ("imageseg", "2019-12-30", "ImageURL", ()),
    "SegmentHair": ("imageseg", "2019-12-30", "ImageURL", ()),
    "ParseFace": ("imageseg", "2019-12-30", "ImageURL", ()),
    "SegmentCommodity": ("imageseg", "2019-12-30", "ImageURL", ("ReturnForm",)),
    "SegmentFurniture": ("imageseg", "2019-12-30", "ImageURL", ()),
    "SegmentCommonImage": ("imageseg", "2019-12-30", "ImageURL", ("ReturnForm",)),
    "SegmentVehicle": ("imageseg", "2019-12-30", "ImageURL", ()),
    "RefineMask": ("imageseg", "2019-12-30", "ImageURL", ("MaskImageURL",)),
    "SegmentVideoBody": ("videoseg", "2020-03-20", "VideoUrl", ()),
    "SegmentHalfBody": ("videoseg", "2020-03-20", "VideoUrl", ()),
    "SegmentGreenScreenVideo": ("videoseg", "2020-03-20", "VideoURL", ()),
    "GetAsyncJobResult": ("videoseg", "2020-03-20", "", ("JobId",)),
    "PicWish": ("picwish", "", "image_url", ("type", "output_type", "crop", "format", "bg_color")),
}


def test_catalogue_has_exactly_the_spec_actions() -> None:
    assert set(ACTIONS) == set(SPEC_ACTIONS)


@pytest.mark.parametrize("name", sorted(SPEC_ACTIONS))
def test_action_has_documented_product_version_and_parameters(name: str) -> None:
    product, version, url_param, others = SPEC_ACTIONS[name]
    action = get_action(name)
    assert (action.product, action.version, action.url_param) == (product, version, url_param)
    assert set(action.all_params) == ({url_param} - {""}) | set(others)


def test_unknown_action_is_refused_with_the_known_names() -> None:
    with pytest.raises(UnknownActionError) as err:
        get_action("SegmentEverything")
    assert "SegmentCommonImage" in err.value.message
    assert err.value.code == "UnsupportedOperation"


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("SegmentBody", {}, False),
        ("SegmentBody", {"Async": "false"}, False),
        ("SegmentBody", {"Async": "true"}, True),
        ("SegmentBody", {"Async": "True"}, True),
        ("SegmentCommonImage", {"Async": "true"}, False),
        ("SegmentVideoBody", {}, True),
        ("SegmentHalfBody", {}, True),
        ("SegmentGreenScreenVideo", {}, True),
        ("PicWish", {}, False),
    ],
)
def test_async_only_for_videoseg_and_segment_body_with_async_true(
    name: str, params: dict[str, str], expected: bool
) -> None:
    """Spec §2: SegmentBody Async=true → poll GetAsyncJobResult; §3: all videoseg actions are async."""
    assert is_async_call(get_action(name), params) is expected


@pytest.mark.parametrize(
    ("name", "formats", "max_bytes"),
    [
        ("SegmentBody", {"JPEG", "PNG", "BMP", "WEBP"}, 3 * MiB),
        ("SegmentHead", {"JPEG", "PNG", "BMP"}, 3 * MiB),  # 002 is stricter than 001 (no WEBP)
        ("SegmentFace", {"JPEG", "PNG", "BMP", "WEBP"}, 3 * MiB),
        ("SegmentHair", {"JPEG", "PNG", "BMP", "WEBP"}, 3 * MiB),
        ("ParseFace", {"JPEG", "PNG"}, 4 * MiB),
        ("SegmentCommodity", {"JPEG", "PNG", "BMP", "WEBP"}, 3 * MiB),
        ("SegmentFurniture", {"JPEG", "PNG", "BMP"}, 4 * MiB),
        ("SegmentCommonImage", {"JPEG", "PNG", "BMP", "WEBP"}, 3 * MiB),
        ("SegmentVehicle", {"JPEG", "PNG", "BMP"}, 3 * MiB),
        ("RefineMask", {"JPEG", "PNG", "BMP"}, 3 * MiB),
        ("SegmentVideoBody", {"MP4", "AVI", "FLV", "MOV"}, 1024 * MiB),
        ("SegmentHalfBody", {"MP4", "MOV", "AVI"}, None),
        ("SegmentGreenScreenVideo", {"MP4", "AVI", "MKV", "MOV", "FLV", "TS", "MPG"}, 120 * MiB),
        ("PicWish", {"JPEG", "BMP", "PNG", "WEBP", "TIFF"}, 15 * MiB),
    ],
)
def test_documented_formats_and_size(name: str, formats: set[str], max_bytes: int | None) -> None:
    limits = get_action(name).limits
    assert limits.formats == formats
    assert "GIF" not in limits.formats
    assert limits.max_bytes == max_bytes


def test_face_and_hair_carry_the_001_resolution_rules() -> None:
    """Spec §2 SegmentFace/SegmentHair (001), also in SegmentHead:
    min side ≤ 2000, 32 ≤ max side ≤ 8000, w×h < 8,000,000, long/short ≤ 16."""
    for name in ("SegmentFace", "SegmentHair", "SegmentHead"):
        limits = get_action(name).limits
        assert limits.max_short_side == 2000
        assert (limits.min_long_side, limits.max_long_side) == (32, 8000)
        assert (limits.max_pixels, limits.max_pixels_exclusive) == (8_000_000, True)
        assert limits.max_long_to_short == (16, 1)
        assert limits.refuse_png_bpp == {8, 16, 64}


def test_video_body_counts_frames_and_half_body_reads_1080p_as_short_and_long_side() -> None:
    assert get_action("SegmentVideoBody").limits.max_frames == 2000
    half = get_action("SegmentHalfBody").limits
    assert (half.max_short_side, half.max_long_side) == (1080, 1920)
    assert (half.min_width, half.min_exclusive) == (100, True)


@pytest.mark.parametrize(
    ("name", "format_code", "resolution_code", "size_code"),
    [
        (
            "SegmentCommonImage",
            "InvalidImage.Content",
            "InvalidImage.Resolution",
            "InvalidParameter.TooLarge",
        ),
        ("SegmentVideoBody", "InvalidFile.Type", "InvalidFile.Resolution", "InvalidFile.Content"),
        ("PicWish", "PicWish.InvalidImage", "PicWish.InvalidImage", "PicWish.TooLarge"),
    ],
)
def test_each_product_maps_violations_to_its_own_codes(
    name: str, format_code: str, resolution_code: str, size_code: str
) -> None:
    codes = get_action(name).codes
    assert (codes.format, codes.resolution, codes.too_large) == (format_code, resolution_code, size_code)
