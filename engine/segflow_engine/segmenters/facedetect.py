"""Face detection and the face mesh: where the faces are (`Face`, 478 landmarks with irises) and segmenter
"face", the face oval of each. Head, hair and ParseFace (`faceparts`) and the person gate (`person`) build on
it; this module imports no other segmenter, so the segmenters' dependencies run one way.

Faces are found with the full-range detector (small faces too), in the whole image and in overlapping tiles,
then each face's square crop, grown around the box, goes through the face mesh on its own — the mesh's
built-in detector only sees large, near faces.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np

from segflow_engine.segmenters import graphs
from segflow_engine.segmenters.base import ElementMask, Segmentation, Segmenter, register
from segflow_engine.segmenters.imageops import bounding_box, clamp_box, resize

MAX_FACES = 5  # SegmentHead/Face/Hair: "≤ 5 faces advised"; the engine keeps the 5 most confident
CROP_GROWTH = 1.7  # the mesh's crop: the detector's box grown by this factor around its centre
MESH_INPUT_SIDE = 384
TILE_MIN_SIDE = 320  # detection tiles: at least this side, else half the image's shorter side

Detection = tuple[float, tuple[float, float, float, float]]  # (score, (x, y, w, h)) in source pixels


@cache
def loops() -> dict[str, tuple[int, ...]]:
    """The mesh's closed outlines (landmark indices in order): the face oval, the eyes and the eyebrows."""
    fm = graphs.solutions().face_mesh
    return {
        "oval": _ordered_loop(fm.FACEMESH_FACE_OVAL),
        "l_eye": _ordered_loop(fm.FACEMESH_LEFT_EYE),
        "r_eye": _ordered_loop(fm.FACEMESH_RIGHT_EYE),
        "l_brow": _brow_loop(fm.FACEMESH_LEFT_EYEBROW),
        "r_brow": _brow_loop(fm.FACEMESH_RIGHT_EYEBROW),
    }


def _neighbours(edges: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
    return neighbours


def _ordered_loop(edges: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """Order an edge set that forms one closed contour into its vertex sequence."""
    neighbours = _neighbours(edges)
    start = min(neighbours)
    order, previous, current = [start], -1, start
    while True:
        candidates = [n for n in neighbours[current] if n != previous]
        if not candidates or candidates[0] == start:
            break
        previous, current = current, candidates[0]
        order.append(current)
        if len(order) > len(neighbours):
            break
    return tuple(order)


def _chains(edges: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Split an edge set made of open chains into vertex lists, each from one end to the other."""
    neighbours = _neighbours(edges)
    seen: set[int] = set()
    chains = []
    for end in sorted(n for n, ns in neighbours.items() if len(ns) == 1):
        if end in seen:
            continue
        chain, previous, current = [end], -1, end
        seen.add(end)
        while True:
            nxt = [n for n in neighbours[current] if n != previous]
            if not nxt:
                break
            previous, current = current, nxt[0]
            chain.append(current)
            seen.add(current)
        chains.append(chain)
    return chains


def _brow_loop(edges: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """An eyebrow is two chains (upper and lower edge); join them into one outline."""
    first, second = _chains(edges)[:2]
    return tuple(first + second[::-1])


@dataclass(frozen=True)
class Face:
    landmarks: np.ndarray  # 478×2 pixel coordinates in the source image
    score: float

    def points(self, indices: Iterable[int]) -> np.ndarray:
        return self.landmarks[list(indices)]

    def oval_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        pts = self.points(loops()["oval"])
        return clamp_box(
            pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max() + 1, pts[:, 1].max() + 1, width, height
        )


def polygon_alpha(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """A uint8 0/255 mask with the polygon filled (anti-aliased edge)."""
    canvas = np.zeros(shape, dtype=np.uint8)
    if len(points) >= 3:
        scaled = np.round(points * 16).astype(np.int32)  # 4 fractional bits: sub-pixel landmark positions
        cv2.fillPoly(canvas, [scaled], 255, lineType=cv2.LINE_AA, shift=4)
    return canvas


def _element(name: str | None, alpha: np.ndarray, margin: int) -> ElementMask | None:
    box = bounding_box(alpha > 0)
    if box is None:
        return None
    x, y, w, h = box
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(alpha.shape[1], x + w + margin), min(alpha.shape[0], y + h + margin)
    return ElementMask(name, (x0, y0, x1 - x0, y1 - y0), np.ascontiguousarray(alpha[y0:y1, x0:x1]))


def segmentation_of(
    shape: tuple[int, int], alphas: Iterable[tuple[str | None, np.ndarray]], margin: int = 2
) -> Segmentation:
    """The union of full-size alphas, and one element (cropped to its pixels plus `margin`) per non-empty
    alpha, in order: the shape of every face-based result."""
    union = np.zeros(shape, dtype=np.uint8)
    elements = []
    for name, alpha in alphas:
        element = _element(name, alpha, margin)
        if element is not None:
            elements.append(element)
            np.maximum(union, alpha, out=union)
    return Segmentation(union, elements)


@register
class FaceSegmenter(Segmenter):
    """The face oval of every face (at most 5, most confident first); also finds faces for the others."""

    name = "face"

    def __init__(self) -> None:
        super().__init__()
        self._detector = graphs.face_detection(full_range=True)
        self._near_detector = graphs.face_detection(full_range=False)
        self._mesh = graphs.face_mesh(max_faces=1)
        self._mesh_many = graphs.face_mesh(max_faces=MAX_FACES)

    def _detect(self, image: np.ndarray) -> list[Detection]:
        found = [*_detect_in(self._detector, image, 0, 0)]
        # The detector sees a 192×192 letterbox of its input, so a face 30 px wide in a 1024 px group photo
        # shrinks to 6 px and is missed: look again in overlapping square tiles.
        height, width = image.shape[:2]
        for side in _tile_sides(height, width):
            stride = max(1, side * 3 // 4)
            for y in _tile_starts(height, side, stride):
                for x in _tile_starts(width, side, stride):
                    tile = np.ascontiguousarray(image[y : y + side, x : x + side])
                    found.extend(_detect_in(self._detector, tile, x, y))
        if not found:
            found.extend(_detect_in(self._near_detector, image, 0, 0))
        return _suppress(sorted(found, key=lambda item: -item[0]))[:MAX_FACES]

    def detect(self, image: np.ndarray) -> list[Detection]:
        """(score, (x, y, w, h)) of every face found (at most 5), most confident first; no mesh."""
        with self._lock:
            return self._detect(np.ascontiguousarray(image))

    def _mesh_in_crop(self, image: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        height, width = image.shape[:2]
        x, y, w, h = box
        side = max(w, h) * CROP_GROWTH
        cx, cy = x + w / 2, y + h / 2
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        size = round(side)
        # Pad instead of clipping so the face stays centred in the crop, as the mesh expects.
        padded = cv2.copyMakeBorder(
            image,
            max(0, -y0),
            max(0, y0 + size - height),
            max(0, -x0),
            max(0, x0 + size - width),
            cv2.BORDER_CONSTANT,
            value=(0, 0, 0),
        )
        px, py = x0 + max(0, -x0), y0 + max(0, -y0)
        crop = padded[py : py + size, px : px + size]
        scale = MESH_INPUT_SIDE / size
        result = self._mesh.process(np.ascontiguousarray(resize(crop, MESH_INPUT_SIDE, MESH_INPUT_SIDE)))
        if not result.multi_face_landmarks:
            return None
        points = np.array([(p.x, p.y) for p in result.multi_face_landmarks[0].landmark], dtype=np.float32)
        points *= MESH_INPUT_SIDE / scale
        points[:, 0] += x0
        points[:, 1] += y0
        return points

    def faces(self, image: np.ndarray) -> list[Face]:
        """Every face (at most 5), most confident first, with its 478 mesh landmarks in source pixels."""
        image = np.ascontiguousarray(image)
        height, width = image.shape[:2]
        with self._lock:
            detections = self._detect(image)
            faces = []
            for score, box in detections:
                points = self._mesh_in_crop(image, box)
                if points is not None:
                    faces.append(Face(points, score))
            if not faces:
                result = self._mesh_many.process(image)
                for landmarks in result.multi_face_landmarks or ():
                    points = np.array(
                        [(p.x * width, p.y * height) for p in landmarks.landmark], dtype=np.float32
                    )
                    faces.append(Face(points, 0.5))
        return faces

    def segment(self, image: np.ndarray) -> Segmentation:
        shape = image.shape[:2]
        ovals = ((None, polygon_alpha(shape, face.points(loops()["oval"]))) for face in self.faces(image))
        return segmentation_of(shape, ovals)


def _detect_in(detector: Any, image: np.ndarray, dx: int, dy: int) -> list[Detection]:
    """One detector pass over `image` (a tile whose top-left corner is (dx, dy) in the source)."""
    height, width = image.shape[:2]
    found = []
    for detection in detector.process(image).detections or ():
        box = detection.location_data.relative_bounding_box
        found.append(
            (
                float(detection.score[0]),
                (box.xmin * width + dx, box.ymin * height + dy, box.width * width, box.height * height),
            )
        )
    return found


def _tile_sides(height: int, width: int) -> list[int]:
    """Tile sides for detection: halvings of the shorter side, then TILE_MIN_SIDE tiles, in which a 30 px
    face still spans 18 of the detector's 192 px (a 2000 px photo gets 1000, 500 and 320 px tiles)."""
    sides = []
    side = min(height, width) // 2
    while side > TILE_MIN_SIDE:
        sides.append(side)
        side //= 2
    if max(height, width) > TILE_MIN_SIDE:
        sides.append(min(TILE_MIN_SIDE, height, width))
    return sides


def _tile_starts(length: int, side: int, stride: int) -> list[int]:
    if length <= side:
        return [0]
    starts = list(range(0, length - side, stride))
    return [*starts, length - side]


def _suppress(detections: list[Detection], overlap: float = 0.4) -> list[Detection]:
    """Non-maximum suppression over (score, box) pairs sorted by score. Overlap is measured against the
    smaller box, so a half face found at a tile's edge does not count as a second face."""
    kept: list[Detection] = []
    for score, box in detections:
        if all(_overlap_of_smaller(box, other) < overlap for _, other in kept):
            kept.append((score, box))
    return kept


def _overlap_of_smaller(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    smaller = min(aw * ah, bw * bh)
    return ix * iy / smaller if smaller > 0 else 0.0
