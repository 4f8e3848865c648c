"""The `fit` oversize policy's image work: fitted copies and full-size restoration (issue 3)."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from segflow.catalogue import get_action
from segflow.errors import InputValidationError
from segflow.imagefit import fit_reasons, prepare_fit, restore_element, restore_full_size, scale_box
from segflow.media import probe_media
from segflow.validation import validate_against_limits


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def open_bytes(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        return opened.copy()


def test_only_violations_a_copy_can_cure_are_fitted() -> None:
    common = get_action("SegmentCommonImage")
    assert fit_reasons(common, {"resolution"}, 2000, 1500) == ("resolution",)
    assert fit_reasons(common, {"png_depth", "bytes"}, 800, 600) == ("bytes", "png_depth")
    assert fit_reasons(common, {"corrupt"}, 800, 600) == ()
    assert fit_reasons(common, set(), 800, 600) == ()
    # ParseFace needs aspect 0.5–2.0 (VISION-API.md §2): no scaled copy of a 3:1 image passes.
    assert fit_reasons(get_action("ParseFace"), {"resolution"}, 3000, 1000) == ()
    assert fit_reasons(get_action("SegmentVideoBody"), {"bytes"}, 800, 600) == ()


def test_fitted_copy_meets_segment_common_image_limits() -> None:
    """SegmentCommonImage: < 1280×1280, ≤ 3 MB, no 8/16/64-bit PNG (VISION-API.md §2)."""
    action = get_action("SegmentCommonImage")
    original = encode(Image.linear_gradient("L").resize((2400, 1800)).convert("RGB"), "JPEG")
    plan = prepare_fit(original, action, ("resolution",))
    info = probe_media(lambda o, n: plan.data[o : o + n], len(plan.data))
    validate_against_limits(action, info, len(plan.data))
    assert plan.original_size == (2400, 1800)
    assert max(plan.work_size) < 1280 and plan.work_size == (info.width, info.height)


def test_sixteen_bit_grey_png_becomes_a_24_bit_copy() -> None:
    action = get_action("SegmentBody")
    original = encode(Image.linear_gradient("L").resize((64, 48)).convert("I;16"))
    plan = prepare_fit(original, action, ("png_depth",))
    info = probe_media(lambda o, n: plan.data[o : o + n], len(plan.data))
    assert (info.format, info.bits_per_pixel, plan.work_size) == ("PNG", 24, (64, 48))


def test_noisy_image_over_the_byte_limit_is_reencoded_under_it() -> None:
    """SegmentCommonImage takes at most 3 MB (VISION-API.md §2)."""
    action = get_action("SegmentCommonImage")
    noisy = Image.frombytes("RGB", (1200, 1200), random.Random(7).randbytes(1200 * 1200 * 3))
    original = encode(noisy)
    assert len(original) > 3 * 1024 * 1024
    plan = prepare_fit(original, action, ("bytes",))
    assert len(plan.data) <= 3 * 1024 * 1024 and plan.extension == ".jpg"


def test_unreadable_bytes_are_a_validation_error() -> None:
    with pytest.raises(InputValidationError):
        prepare_fit(b"not an image", get_action("SegmentBody"), ("format",))


def test_mask_of_the_copy_is_applied_to_the_full_size_original() -> None:
    original = encode(Image.new("RGB", (400, 200), (10, 200, 30)))
    small_cutout = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    small_cutout.paste((255, 255, 255, 255), (0, 0, 50, 50))
    restored = open_bytes(restore_full_size(original, encode(small_cutout), as_mask=False))
    assert (restored.mode, restored.size) == ("RGBA", (400, 200))
    assert restored.getpixel((20, 100)) == (10, 200, 30, 255)  # the original's own pixels, kept
    assert restored.getpixel((380, 100))[3] == 0
    mask = open_bytes(restore_full_size(original, encode(small_cutout), as_mask=True))
    assert (mask.mode, mask.size) == ("L", (400, 200))


def test_element_boxes_and_crops_scale_back_to_the_original() -> None:
    fit = {"OriginalWidth": 3000, "OriginalHeight": 2000, "WorkWidth": 1500, "WorkHeight": 1000}
    assert scale_box((100, 50, 200, 100), fit) == (200, 100, 400, 200)
    assert scale_box((1400, 900, 200, 200), fit) == (2800, 1800, 200, 200)  # clipped at the edge
    original = encode(Image.new("RGB", (3000, 2000), (1, 2, 3)))
    element = encode(Image.new("RGBA", (200, 100), (9, 9, 9, 255)))
    crop = open_bytes(restore_element(original, element, (200, 100, 400, 200), as_mask=False))
    assert crop.size == (400, 200) and crop.getpixel((10, 10)) == (1, 2, 3, 255)
