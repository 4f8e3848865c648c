"""The glue between the server and the models: one call per action, producing exactly the outputs the action
documents, as encoded bytes. The server stores them and turns them into URLs (see `pipeline.store_output`).

Which model serves which action:

- SegmentBody, PicWish `person`: `person` (ISNet gated by MediaPipe selfie + pose) → RGBA PNG cut-out.
- SegmentCommonImage, SegmentCommodity, PicWish `object`: `salient` (ISNet) → RGBA PNG, L mask with
  `ReturnForm=mask`.
- SegmentFurniture: `salient` → `Elements[{ImageUrl}]` RGBA PNG.
- SegmentVehicle: `salient` → `Elements[{OriginImageURL, ImageURL}]`.
- SegmentHead: `head` (face mesh + person mask) → `Elements[]` RGBA crops with X, Y, Width, Height (L masks
  with `ReturnForm=mask`); SegmentFace, SegmentHair: `face`, `hair` → the same, at most 5 faces.
- ParseFace: `parse_face` (face-mesh regions) → `OriginImageURL` + `Elements[{Name, ImageURL}]`, each part
  a full-size RGBA cut-out (so parts overlay the original).
- RefineMask: `matting` (pymatting on a trimap from the coarse mask) → `Elements[{ImageURL}]` L mask.
- PicWish `stamp`: `stamp` (ink colour); PicWish auto (empty type): `person` when a face is found, else
  `salient`.
- SegmentVideoBody / SegmentHalfBody: `video_person` / `half_body` (stateful, temporally smoothed);
  SegmentGreenScreenVideo: `greenscreen` (chroma key) → grey mask video (mp4, H.264).

ParseFace's `l_*`/`r_*` are the *person's* left and right, as anatomical names and the seed's 左眼/右眼 read:
on an unmirrored frontal photo `l_eye` is on the image's right side. (MediaPipe's FACEMESH_LEFT_* use the same
convention.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segflow.errors import InputValidationError, UnknownActionError
from segflow_engine import render
from segflow_engine.segmenters.base import ElementMask, Segmentation, get_segmenter, get_typed

MAX_FACES = 5  # SegmentHead/Face/Hair: "≤ 5 faces advised"; the engine returns the 5 most confident

SALIENT_ACTIONS = frozenset({"SegmentCommonImage", "SegmentCommodity"})
FACE_ELEMENT_ACTIONS = {"SegmentHead": "head", "SegmentFace": "face", "SegmentHair": "hair"}
VIDEO_ACTIONS = {
    "SegmentVideoBody": "video_person",
    "SegmentHalfBody": "half_body",
    "SegmentGreenScreenVideo": "greenscreen",
}
PICWISH = "PicWish"
PICWISH_OUTPUT_IMAGE_AND_MASK, PICWISH_OUTPUT_IMAGE, PICWISH_OUTPUT_MASK = 1, 2, 3


@dataclass(frozen=True)
class ElementOutput:
    """One entry of `Data.Elements`: an encoded image, and what the action documents beside it."""

    image: bytes
    box: tuple[int, int, int, int] | None = None  # X, Y, Width, Height in the source (head/face/hair)
    name: str | None = None  # ParseFace part name
    origin_image: bytes | None = None  # SegmentVehicle's OriginImageURL


@dataclass(frozen=True)
class ActionOutput:
    """What an image action made. `extension` names the encoding of `image` ("png" or "jpg")."""

    image: bytes | None = None
    mask: bytes | None = None  # PicWish output_type 1/3: always a single-channel PNG
    origin_image: bytes | None = None  # ParseFace's OriginImageURL: the input, re-encoded as PNG
    elements: tuple[ElementOutput, ...] = ()
    extension: str = "png"
    width: int = 0
    height: int = 0
    segmenter: str = ""
    metadata: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class VideoOutput:
    path: Path
    frames: int
    width: int
    height: int
    fps: float
    segmenter: str


def _invalid(message: str, code: str = "InvalidParameter") -> InputValidationError:
    return InputValidationError(message, code=code, http_status=400)


def _decode_failure(what: str, exc: Exception, size: int) -> str:
    """A message a user can act on; PIL's own text names in-memory objects (`<_io.BytesIO …>`)."""
    detail = "unrecognised or truncated data" if "cannot identify" in str(exc) else str(exc)
    return f"{what} cannot be decoded ({size} bytes): {detail}"


def _as_image(image: bytes | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise _invalid("the image must be H×W×3 uint8 RGB", "InvalidImage.Content")
        return image
    try:
        return render.decode_image(image)
    except Exception as exc:  # PIL raises a handful of types for corrupt data
        raise _invalid(_decode_failure("the image", exc, len(image)), "InvalidImage.Content") from exc


def _wants_mask(params: Mapping[str, str]) -> bool:
    return params.get("ReturnForm", "").strip().lower() == "mask"


def _segment(name: str, image: np.ndarray) -> Segmentation:
    return get_segmenter(name).segment(image)


def _element_crops(
    image: np.ndarray, elements: list[ElementMask], *, as_mask: bool, limit: int = MAX_FACES
) -> tuple[ElementOutput, ...]:
    outputs = []
    for element in elements[:limit]:
        x, y, w, h = element.box
        encoded = (
            render.mask_png(element.mask)
            if as_mask
            else render.cutout_png(image[y : y + h, x : x + w], element.mask)
        )
        outputs.append(ElementOutput(image=encoded, box=element.box))
    return tuple(outputs)


def _full_size(element: ElementMask, shape: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(shape, dtype=np.uint8)
    x, y, w, h = element.box
    canvas[y : y + h, x : x + w] = element.mask
    return canvas


def run_image_action(
    action: str,
    params: Mapping[str, str],
    image: bytes | np.ndarray,
    extra_images: Mapping[str, bytes | np.ndarray] | None = None,
) -> ActionOutput:
    """Run one image action on a decoded or encoded image. `extra_images` holds further inputs by parameter
    name (RefineMask's `MaskImageURL`). Raises `UnknownActionError` or `InputValidationError`."""
    rgb = _as_image(image)
    height, width = rgb.shape[:2]
    extras = extra_images or {}

    if action == "SegmentBody":
        mask = _segment("person", rgb).mask
        return ActionOutput(
            image=render.cutout_png(rgb, mask), segmenter="person", width=width, height=height
        )
    if action in SALIENT_ACTIONS:
        mask = _segment("salient", rgb).mask
        encoded = render.mask_png(mask) if _wants_mask(params) else render.cutout_png(rgb, mask)
        return ActionOutput(image=encoded, segmenter="salient", width=width, height=height)
    if action == "SegmentFurniture":
        mask = _segment("salient", rgb).mask
        return ActionOutput(
            elements=(ElementOutput(render.cutout_png(rgb, mask)),),
            segmenter="salient",
            width=width,
            height=height,
        )
    if action == "SegmentVehicle":
        mask = _segment("salient", rgb).mask
        element = ElementOutput(render.cutout_png(rgb, mask), origin_image=render.image_png(rgb))
        return ActionOutput(elements=(element,), segmenter="salient", width=width, height=height)
    if action in FACE_ELEMENT_ACTIONS:
        name = FACE_ELEMENT_ACTIONS[action]
        result = _segment(name, rgb)
        as_mask = action == "SegmentHead" and _wants_mask(params)
        elements = _element_crops(rgb, result.elements, as_mask=as_mask)
        return ActionOutput(
            elements=elements, segmenter=name, metadata={"faces": len(elements)}, width=width, height=height
        )
    if action == "ParseFace":
        return _parse_face(rgb)
    if action == "RefineMask":
        return _refine_mask(rgb, extras)
    if action == PICWISH:
        return _picwish(rgb, params)
    raise UnknownActionError(f"the engine has no image model for action {action!r}")


def _parse_face(rgb: np.ndarray) -> ActionOutput:
    height, width = rgb.shape[:2]
    result = _segment("parse_face", rgb)
    if not result.elements:
        raise _invalid("no frontal face found in the image", "InvalidImage.Content")
    shape = rgb.shape[:2]
    elements = tuple(
        ElementOutput(render.cutout_png(rgb, _full_size(part, shape)), name=part.name)
        for part in result.elements
    )
    return ActionOutput(
        origin_image=render.image_png(rgb),
        elements=elements,
        segmenter="parse_face",
        metadata={"parts": [part.name for part in result.elements]},
        width=width,
        height=height,
    )


def _refine_mask(rgb: np.ndarray, extras: Mapping[str, bytes | np.ndarray]) -> ActionOutput:
    coarse_input = extras.get("MaskImageURL")
    if coarse_input is None:
        raise _invalid("RefineMask needs MaskImageURL, the coarse mask of the same image", "MissingParameter")
    height, width = rgb.shape[:2]
    if isinstance(coarse_input, np.ndarray):
        coarse = coarse_input if coarse_input.ndim == 2 else coarse_input[..., -1]
    else:
        try:
            coarse = render.decode_mask(coarse_input, width, height)
        except Exception as exc:
            raise _invalid(
                _decode_failure("MaskImageURL", exc, len(coarse_input)), "InvalidImage.Content"
            ) from exc
    from segflow_engine.segmenters.matting import MattingSegmenter

    refined = get_typed("matting", MattingSegmenter).refine(rgb, coarse)
    return ActionOutput(
        elements=(ElementOutput(render.mask_png(refined)),), segmenter="matting", width=width, height=height
    )


def _int_param(params: Mapping[str, str], name: str, default: int, allowed: tuple[int, ...]) -> int:
    raw = str(params.get(name, "") or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(f"{name} must be one of {allowed}, not {raw!r}") from None
    if value not in allowed:
        raise _invalid(f"{name} must be one of {allowed}, not {value}")
    return value


def picwish_auto_kind(rgb: np.ndarray) -> str:
    """PicWish's empty `type`: "person" when the image shows somebody (a face is found), else "object"."""
    from segflow_engine.segmenters.person import PersonSegmenter

    return "person" if get_typed("person", PersonSegmenter).present(rgb) else "object"


def _picwish(rgb: np.ndarray, params: Mapping[str, str]) -> ActionOutput:
    kind = str(params.get("type", "") or "").strip().lower()
    if kind not in ("", "auto", "person", "object", "stamp"):
        raise _invalid(f"type must be person, object, stamp or empty, not {kind!r}")
    output_type = _int_param(params, "output_type", PICWISH_OUTPUT_IMAGE, (1, 2, 3))
    crop = _int_param(params, "crop", 0, (0, 1))
    fmt = str(params.get("format", "") or "png").strip().lower()
    if fmt not in ("png", "jpg", "jpeg"):
        raise _invalid(f"format must be png or jpg, not {fmt!r}")
    try:
        bg_color = render.parse_hex_color(params.get("bg_color"))
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    resolved = picwish_auto_kind(rgb) if kind in ("", "auto") else kind
    name = {"person": "person", "object": "salient", "stamp": "stamp"}[resolved]
    mask = _segment(name, rgb).mask
    image = rgb
    box = render.subject_box(mask) if crop == 1 else None
    if box is not None:
        image, mask = render.crop(rgb, box), render.crop(mask, box)
    encoded_image: bytes | None = None
    extension = "png"
    if output_type in (PICWISH_OUTPUT_IMAGE_AND_MASK, PICWISH_OUTPUT_IMAGE):
        if fmt == "png":
            encoded_image = render.cutout_png(image, mask)
        else:
            encoded_image, extension = render.jpeg_on_color(image, mask, bg_color), "jpg"
    encoded_mask = render.mask_png(mask) if output_type in (1, PICWISH_OUTPUT_MASK) else None
    return ActionOutput(
        image=encoded_image,
        mask=encoded_mask,
        extension=extension,
        segmenter=name,
        metadata={"type": resolved, "crop_box": box},
        width=int(mask.shape[1]),
        height=int(mask.shape[0]),
    )


WARM_UP_SEGMENTERS = ("salient", "pose_person", "face", "person", "head", "hair", "parse_face", "stamp")


def warm_up(names: tuple[str, ...] = WARM_UP_SEGMENTERS) -> dict[str, float]:
    """Load the segmenters now (seconds each), so the first request does not pay for the model loads."""
    import time

    timings = {}
    for name in names:
        started = time.monotonic()
        get_segmenter(name)
        timings[name] = time.monotonic() - started
    return timings


def run_video_action(action: str, params: Mapping[str, str], src_path: Path, dst_path: Path) -> VideoOutput:
    """Segment every frame of `src_path` and write the grey mask video (mp4, H.264) to `dst_path`, streaming:
    memory stays flat whatever the length."""
    name = VIDEO_ACTIONS.get(action)
    if name is None:
        raise UnknownActionError(f"the engine has no video model for action {action!r}")
    from segflow_engine import videoio
    from segflow_engine.segmenters.video import open_stream

    with open_stream(name) as stream:
        info = videoio.process_video(Path(src_path), Path(dst_path), stream.mask)
    return VideoOutput(Path(dst_path), info.frames, info.width, info.height, info.fps, name)
