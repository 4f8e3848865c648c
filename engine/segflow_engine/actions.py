"""The glue between the server and the models: one call per action, producing exactly the outputs the action
documents, as encoded bytes. The server stores them and turns them into URLs (see `pipeline.store_output`).

`ACTIONS` is the engine's one list of what it serves, keyed by the catalogue's action names: per action, the
segmenter (by its name in `segmenters.base`) and the renderer that turns the segmentation into the action's
outputs. Whether an action is an image call or a video job is the catalogue's word (`is_async`), not this
module's: the table is checked against it when it is built. Video actions have no renderer: every frame's
mask is streamed into a grey mask video (mp4, H.264) by `run_video_action`. `ALL_ACTIONS` is every action
the engine has a model for; `ACTIONS` keeps those this process serves (`segflow_engine.served`: a package
built without some actions refuses them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from segflow.catalogue import get_action
from segflow.errors import InputValidationError, UnknownActionError
from segflow_engine import picwish, render, served
from segflow_engine.segmenters.base import ElementMask, Segmentation, get_segmenter, get_typed
from segflow_engine.segmenters.facedetect import MAX_FACES

PICWISH_SEGMENTERS = MappingProxyType(
    {"person": "person", "object": "salient", "stamp": "stamp"}
)  # by `type`


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


@dataclass(frozen=True)
class ImageCall:
    """One image action's inputs: the decoded image, the string parameters, and further images by parameter
    name (RefineMask's `MaskImageURL`)."""

    rgb: np.ndarray
    params: Mapping[str, str]
    extras: Mapping[str, bytes | np.ndarray]

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])


Renderer = Callable[[str, ImageCall], ActionOutput]  # (segmenter name, call) → the action's outputs


@dataclass(frozen=True)
class EngineAction:
    """How the engine serves one catalogue action."""

    name: str  # the catalogue's action name
    segmenter: str  # the model that serves it; "" for PicWish, whose `type` picks one per call
    render: Renderer | None = None  # image actions only; a video action's masks are streamed

    @property
    def is_async(self) -> bool:
        """The catalogue's word: an async action is a job (here always a video), the others image calls."""
        return get_action(self.name).is_async


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


# -- renderers: (segmenter, call) → ActionOutput -------------------------------------------------------------


def _cutout(segmenter: str, call: ImageCall) -> ActionOutput:
    """RGBA PNG cut-out of the whole image."""
    mask = _segment(segmenter, call.rgb).mask
    image = render.cutout_png(call.rgb, mask)
    return ActionOutput(image=image, segmenter=segmenter, width=call.width, height=call.height)


def _cutout_or_mask(segmenter: str, call: ImageCall) -> ActionOutput:
    """The cut-out, or the L mask with `ReturnForm=mask`."""
    mask = _segment(segmenter, call.rgb).mask
    encoded = render.mask_png(mask) if _wants_mask(call.params) else render.cutout_png(call.rgb, mask)
    return ActionOutput(image=encoded, segmenter=segmenter, width=call.width, height=call.height)


def _cutout_element(segmenter: str, call: ImageCall) -> ActionOutput:
    """`Elements[{ImageUrl}]`: the cut-out as the one element."""
    mask = _segment(segmenter, call.rgb).mask
    element = ElementOutput(render.cutout_png(call.rgb, mask))
    return ActionOutput(elements=(element,), segmenter=segmenter, width=call.width, height=call.height)


def _cutout_element_with_origin(segmenter: str, call: ImageCall) -> ActionOutput:
    """`Elements[{OriginImageURL, ImageURL}]`: the cut-out and the input, re-encoded as PNG."""
    mask = _segment(segmenter, call.rgb).mask
    element = ElementOutput(render.cutout_png(call.rgb, mask), origin_image=render.image_png(call.rgb))
    return ActionOutput(elements=(element,), segmenter=segmenter, width=call.width, height=call.height)


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


def _crops(segmenter: str, call: ImageCall, *, as_mask: bool) -> ActionOutput:
    elements = _element_crops(call.rgb, _segment(segmenter, call.rgb).elements, as_mask=as_mask)
    return ActionOutput(
        elements=elements,
        segmenter=segmenter,
        metadata={"faces": len(elements)},
        width=call.width,
        height=call.height,
    )


def _face_crops(segmenter: str, call: ImageCall) -> ActionOutput:
    """`Elements[]`: one RGBA crop per face (at most 5, most confident first) with X, Y, Width, Height."""
    return _crops(segmenter, call, as_mask=False)


def _face_crops_or_masks(segmenter: str, call: ImageCall) -> ActionOutput:
    """`_face_crops`, or the crops' L masks with `ReturnForm=mask`."""
    return _crops(segmenter, call, as_mask=_wants_mask(call.params))


def _full_size(element: ElementMask, shape: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros(shape, dtype=np.uint8)
    x, y, w, h = element.box
    canvas[y : y + h, x : x + w] = element.mask
    return canvas


def _parse_face(segmenter: str, call: ImageCall) -> ActionOutput:
    """`OriginImageURL` + `Elements[{Name, ImageURL}]`, each part a full-size RGBA cut-out (so parts overlay
    the original). `l_*`/`r_*` are the *person's* left and right, as anatomical names and the seed's
    左眼/右眼 read: on an unmirrored frontal photo `l_eye` is on the image's right side (MediaPipe's
    FACEMESH_LEFT_* use the same convention)."""
    rgb = call.rgb
    result = _segment(segmenter, rgb)
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
        segmenter=segmenter,
        metadata={"parts": [part.name for part in result.elements]},
        width=call.width,
        height=call.height,
    )


def _refine_mask(segmenter: str, call: ImageCall) -> ActionOutput:
    """`Elements[{ImageURL}]`: the L mask refined from the coarse `MaskImageURL` (its alpha, or grey)."""
    coarse_input = call.extras.get("MaskImageURL")
    if coarse_input is None:
        raise _invalid("RefineMask needs MaskImageURL, the coarse mask of the same image", "MissingParameter")
    width, height = call.width, call.height
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

    refined = get_typed(segmenter, MattingSegmenter).refine(call.rgb, coarse)
    return ActionOutput(
        elements=(ElementOutput(render.mask_png(refined)),), segmenter=segmenter, width=width, height=height
    )


def picwish_auto_kind(rgb: np.ndarray) -> str:
    """PicWish's empty `type`: "person" when the image shows somebody (a face is found), else "object"."""
    from segflow_engine.segmenters.person import PersonSegmenter

    return "person" if get_typed("person", PersonSegmenter).present(rgb) else "object"


def _picwish(segmenter: str, call: ImageCall) -> ActionOutput:
    """PicWish: `type` picks the segmenter (`segmenter` is unused); `output_type` the image, the mask or
    both; `crop=1` crops to the subject; `format=jpg` puts the subject on `bg_color`."""
    params, rgb = call.params, call.rgb
    try:
        chosen = picwish.options(params)
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    kind, output_type, crop, fmt = chosen.type, chosen.output_type, chosen.crop, chosen.format
    bg_color = render.parse_hex_color(chosen.bg_color)
    resolved = kind or picwish_auto_kind(rgb)
    name = PICWISH_SEGMENTERS[resolved]
    mask = _segment(name, rgb).mask
    image = rgb
    box = render.subject_box(mask) if crop == 1 else None
    if box is not None:
        image, mask = render.crop(rgb, box), render.crop(mask, box)
    encoded_image: bytes | None = None
    extension = "png"
    if output_type in (picwish.OUTPUT_IMAGE_AND_MASK, picwish.OUTPUT_IMAGE):
        if fmt == "png":
            encoded_image = render.cutout_png(image, mask)
        else:
            encoded_image, extension = render.jpeg_on_color(image, mask, bg_color), "jpg"
    wants_mask = output_type in (picwish.OUTPUT_IMAGE_AND_MASK, picwish.OUTPUT_MASK)
    encoded_mask = render.mask_png(mask) if wants_mask else None
    return ActionOutput(
        image=encoded_image,
        mask=encoded_mask,
        extension=extension,
        segmenter=name,
        metadata={"type": resolved, "crop_box": box},
        width=int(mask.shape[1]),
        height=int(mask.shape[0]),
    )


def action_table(*entries: EngineAction) -> Mapping[str, EngineAction]:
    """The entries by name. An entry the catalogue does not know (`get_action` raises), one served the other
    way than the catalogue's `is_async` says, or a name given twice is a mistake in this module: it fails
    at import, before the server answers anything."""
    for entry in entries:
        if (entry.render is None) != entry.is_async:
            served = "a video job" if entry.render is None else "an image call"
            raise TypeError(
                f"{entry.name} is served as {served}; the catalogue says is_async={entry.is_async}"
            )
    table = {entry.name: entry for entry in entries}
    if len(table) != len(entries):
        raise TypeError("an action appears twice in the engine's action table")
    return MappingProxyType(table)


ALL_ACTIONS: Mapping[str, EngineAction] = action_table(
    # imageseg. person: ISNet gated by MediaPipe selfie + pose; salient: ISNet.
    EngineAction("SegmentBody", "person", _cutout),
    EngineAction("SegmentCommonImage", "salient", _cutout_or_mask),
    EngineAction("SegmentCommodity", "salient", _cutout_or_mask),
    EngineAction("SegmentFurniture", "salient", _cutout_element),
    EngineAction("SegmentVehicle", "salient", _cutout_element_with_origin),
    # face: the face mesh's oval; head and hair add the person mask; parse_face: face-mesh regions.
    EngineAction("SegmentHead", "head", _face_crops_or_masks),
    EngineAction("SegmentFace", "face", _face_crops),
    EngineAction("SegmentHair", "hair", _face_crops),
    EngineAction("ParseFace", "parse_face", _parse_face),
    # matting: pymatting on a trimap drawn from the coarse mask.
    EngineAction("RefineMask", "matting", _refine_mask),
    # videoseg: stateful, temporally smoothed person masks (MediaPipe); greenscreen: a chroma key.
    EngineAction("SegmentVideoBody", "video_person"),
    EngineAction("SegmentHalfBody", "half_body"),
    EngineAction("SegmentGreenScreenVideo", "greenscreen"),
    # PicWish: `type` person, object (salient) or stamp (ink colour); empty: person when a face is found.
    EngineAction("PicWish", "", _picwish),
)


def only_served(table: Mapping[str, EngineAction], names: frozenset[str]) -> Mapping[str, EngineAction]:
    """The entries of `table` whose action is in `names`, in the table's order."""
    return MappingProxyType({name: entry for name, entry in table.items() if name in names})


ACTIONS: Mapping[str, EngineAction] = only_served(ALL_ACTIONS, served.served_actions())


def segmenters_of(entry: EngineAction) -> frozenset[str]:
    """The segmenters that answer an action (PicWish: one per `type`)."""
    return frozenset(PICWISH_SEGMENTERS.values()) if entry.name == "PicWish" else frozenset({entry.segmenter})


def run_image_action(
    action: str,
    params: Mapping[str, str],
    image: bytes | np.ndarray,
    extra_images: Mapping[str, bytes | np.ndarray] | None = None,
) -> ActionOutput:
    """Run one image action on a decoded or encoded image. `extra_images` holds further inputs by parameter
    name (RefineMask's `MaskImageURL`). Raises `UnknownActionError` or `InputValidationError`."""
    served.require_served(action)
    rgb = _as_image(image)
    entry = ACTIONS.get(action)
    if entry is None or entry.render is None:
        raise UnknownActionError(f"the engine has no image model for action {action!r}")
    return entry.render(entry.segmenter, ImageCall(rgb, params, extra_images or {}))


WARM_UP_SEGMENTERS = (
    "salient",
    "pose_person",
    "face",
    "person",
    "head",
    "hair",
    "parse_face",
    "stamp",
    "matting",
)


def served_warm_up() -> tuple[str, ...]:
    """The segmenters of `WARM_UP_SEGMENTERS` the served actions use (a segmenter loads the ones it builds
    on, `pose_person` with `person`)."""
    used = frozenset().union(*(segmenters_of(entry) for entry in ACTIONS.values()))
    return tuple(name for name in WARM_UP_SEGMENTERS if name in used)


def warm_up(names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Load the segmenters now and warm them (seconds each), so the first request pays for neither. By
    default those the served actions use (`served_warm_up`)."""
    import time

    timings = {}
    for name in served_warm_up() if names is None else names:
        started = time.monotonic()
        get_segmenter(name).warm()
        timings[name] = time.monotonic() - started
    return timings


def run_video_action(action: str, params: Mapping[str, str], src_path: Path, dst_path: Path) -> VideoOutput:
    """Segment every frame of `src_path` and write the grey mask video (mp4, H.264) to `dst_path`, streaming:
    memory stays flat whatever the length."""
    served.require_served(action)
    entry = ACTIONS.get(action)
    if entry is None or not entry.is_async:
        raise UnknownActionError(f"the engine has no video model for action {action!r}")
    from segflow_engine import videoio
    from segflow_engine.segmenters.video import open_stream

    with open_stream(entry.segmenter) as stream:
        info = videoio.process_video(Path(src_path), Path(dst_path), stream.mask)
    return VideoOutput(Path(dst_path), info.frames, info.width, info.height, info.fps, entry.segmenter)
