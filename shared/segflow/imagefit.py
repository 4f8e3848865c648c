"""The `fit` oversize policy: segment a copy the action accepts, keep the original's size in the result.

An image beyond the action's limits (resolution, bytes, or a PNG depth the service refuses: 8/16/64-bit)
is copied, converted to 24/32-bit and scaled down to what the action takes; the copy is segmented, and
the mask that comes back is scaled up to the original size and applied to the full-resolution original,
so the stored cut-out has the original's size. Pillow is imported inside the functions: the layer's
import stays light, and only objects that need fitting pay for it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from segflow.catalogue import Action
from segflow.errors import InputValidationError
from segflow.values import Value

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

MAX_SHRINK_STEPS = 12
MAX_FIT_PIXELS = 60_000_000
"""Larger originals are not fitted: decoding one (and later restoring it at full size as RGBA) would not
fit in a function's memory; the action's own resolution error is recorded instead."""
JPEG_QUALITIES = (92, 85, 75)


class FitPlan(Value):
    """The copy to submit instead of the original, and how it relates to the original."""

    data: bytes
    extension: str  # ".png" | ".jpg"
    content_type: str
    original_size: tuple[int, int]
    work_size: tuple[int, int]
    reasons: tuple[str, ...]

    def to_record(self) -> dict[str, Any]:
        return {
            "OriginalWidth": self.original_size[0],
            "OriginalHeight": self.original_size[1],
            "WorkWidth": self.work_size[0],
            "WorkHeight": self.work_size[1],
            "Reasons": list(self.reasons),
        }


FITTABLE_KINDS = frozenset({"format", "bytes", "png_depth", "resolution"})
"""Violations a converted, scaled copy can cure (an empty or corrupt file, or too many frames, cannot)."""


def fit_reasons(
    action: Action, kinds: Iterable[str], width: int | None, height: int | None
) -> tuple[str, ...]:
    """The violation kinds a fitted copy would cure; empty when fitting cannot help (then the original
    violation is the outcome)."""
    found = frozenset(kinds)
    if action.media != "image" or not found or not found <= FITTABLE_KINDS:
        return ()
    if width and height and width * height > MAX_FIT_PIXELS:
        return ()
    if "resolution" in found:
        if not width or not height:
            return ()
        try:
            _target_size(action, width, height)
        except InputValidationError:
            return ()  # too small or a refused aspect ratio: no scaled copy passes
    return tuple(sorted(found))


def _target_size(action: Action, width: int, height: int) -> tuple[int, int] | None:
    from segflow.validation import fit_size  # the media helper owns the arithmetic of the limits

    return fit_size(action, width, height)


def prepare_fit(original: bytes, action: Action, reasons: tuple[str, ...]) -> FitPlan:
    """Make the copy: converted to RGB/RGBA, scaled into the limits, encoded under the byte limit.

    Raises `InputValidationError` when Pillow cannot read the image or no copy fits the byte limit.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(original)) as opened:
            if opened.width * opened.height > MAX_FIT_PIXELS:
                raise Image.DecompressionBombError(f"{opened.width}×{opened.height} is too large to fit")
            opened.load()
            image = _normalise_mode(opened)
    except Image.DecompressionBombError as exc:  # not an OSError: a header claiming billions of pixels
        raise InputValidationError(
            f"cannot fit the image: {exc}", code=action.codes.resolution, http_status=400
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputValidationError(
            f"cannot read the image to fit it: {exc}", code=action.codes.corrupt, http_status=400
        ) from exc
    original_size = image.size
    target = _target_size(action, *original_size) or original_size
    work = image if target == original_size else image.resize(target, Image.Resampling.LANCZOS)
    limits = action.limits
    for _ in range(MAX_SHRINK_STEPS):
        encoded = _encode_within(work, action)
        if encoded is not None:
            data, extension, content_type = encoded
            return FitPlan(data, extension, content_type, original_size, work.size, reasons)
        # Even the smallest JPEG is over the byte limit: shrink further, keeping the minimum sizes.
        smaller = (max(1, int(work.size[0] * 0.85)), max(1, int(work.size[1] * 0.85)))
        if limits.min_width and smaller[0] <= limits.min_width:
            break
        if limits.min_height and smaller[1] <= limits.min_height:
            break
        work = work.resize(smaller, Image.Resampling.LANCZOS)
    raise InputValidationError(
        f"no copy of the image fits the {limits.max_bytes}-byte limit of {action.name}",
        code=action.codes.too_large,
        http_status=action.codes.too_large_http_status,
    )


def _normalise_mode(image: PILImage) -> PILImage:
    """24-bit RGB or 32-bit RGBA, the PNG depths the services take (palette, grey, 16-bit all convert)."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    return image.convert("RGBA" if has_alpha else "RGB")


def _encode_within(image: PILImage, action: Action) -> tuple[bytes, str, str] | None:
    limits = action.limits
    formats = limits.formats or frozenset({"PNG", "JPEG"})

    def fits(data: bytes) -> bool:
        if limits.max_bytes is None:
            return True
        return len(data) < limits.max_bytes if limits.max_bytes_exclusive else len(data) <= limits.max_bytes

    if "PNG" in formats:
        data = _save(image, "PNG")
        if fits(data):
            return data, ".png", "image/png"
    if "JPEG" in formats:
        rgb = image.convert("RGB")
        for quality in JPEG_QUALITIES:
            data = _save(rgb, "JPEG", quality=quality)
            if fits(data):
                return data, ".jpg", "image/jpeg"
    return None


def _save(image: PILImage, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _alpha_of(result: bytes) -> PILImage:
    from PIL import Image

    with Image.open(io.BytesIO(result)) as opened:
        opened.load()
        if opened.mode in ("RGBA", "LA", "PA") or "transparency" in opened.info:
            alpha: PILImage = opened.convert("RGBA").getchannel("A")
            return alpha
        mask: PILImage = opened.convert("L")  # a one-channel mask (ReturnForm=mask, PicWish mask)
        return mask


def restore_full_size(original: bytes, result: bytes, *, as_mask: bool) -> bytes:
    """Scale the result's mask (its alpha, or the grey mask itself) to the original size; return the
    full-size mask PNG (`as_mask`) or the original with that mask as alpha (the cut-out PNG)."""
    from PIL import Image

    with Image.open(io.BytesIO(original)) as opened:
        opened.load()
        full = opened.convert("RGBA")
    alpha = _alpha_of(result).resize(full.size, Image.Resampling.BILINEAR)
    if as_mask:
        return _save(alpha, "PNG")
    full.putalpha(alpha)
    return _save(full, "PNG")


def scale_box(box: tuple[int, int, int, int], plan_record: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """An element's X, Y, Width, Height from copy coordinates to original coordinates (clipped)."""
    sx = plan_record["OriginalWidth"] / plan_record["WorkWidth"]
    sy = plan_record["OriginalHeight"] / plan_record["WorkHeight"]
    x, y, w, h = box
    ox, oy = round(x * sx), round(y * sy)
    ow = min(max(1, round(w * sx)), plan_record["OriginalWidth"] - ox)
    oh = min(max(1, round(h * sy)), plan_record["OriginalHeight"] - oy)
    return ox, oy, max(1, ow), max(1, oh)


def restore_element(
    original: bytes, element: bytes, box: tuple[int, int, int, int], *, as_mask: bool
) -> bytes:
    """An element (face, head …) at original resolution: its mask scaled to `box` (original coordinates)
    applied to that crop of the original."""
    from PIL import Image

    x, y, w, h = box
    alpha = _alpha_of(element).resize((w, h), Image.Resampling.BILINEAR)
    if as_mask:
        return _save(alpha, "PNG")
    with Image.open(io.BytesIO(original)) as opened:
        opened.load()
        crop = opened.convert("RGBA").crop((x, y, x + w, y + h))
    crop.putalpha(alpha)
    return _save(crop, "PNG")
