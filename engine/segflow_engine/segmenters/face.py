"""Faces, heads, hair and face parts from MediaPipe face detection + face mesh (478 landmarks with irises).

Faces are found with the full-range detector (small faces too), then each face's square crop, grown around
the box, goes through the face mesh on its own — the mesh's built-in detector only sees large, near faces.
- face: the mesh's face oval.
- head: the person mask (see `person`) inside a box grown around the face, cut under the jaw (neck), plus the
  face oval: so it includes the hair.
- hair: the head minus the face oval and minus skin-coloured pixels (ears, neck; colour taken on the cheeks).
- parse_face: the mesh regions rasterised: skin, l_brow, r_brow, l_eye, r_eye, nose, u_lip, l_lip and mouth
  when the lips are apart. `l_`/`r_` are the person's own left and right, as in MediaPipe's FACEMESH_LEFT_*:
  on an unmirrored frontal photo the person's left eye is on the image's right. Ears are not given (the spec
  makes them optional; the mesh does not cover them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import cv2
import numpy as np

from segflow_engine.segmenters import graphs
from segflow_engine.segmenters.base import ElementMask, Segmentation, Segmenter, get_typed, register
from segflow_engine.segmenters.imageops import (
    bounding_box,
    clamp_box,
    dilate,
    erode,
    largest_components,
    resize,
)

MAX_FACES = 5
CROP_GROWTH = 1.7  # the mesh's crop: the detector's box grown by this factor around its centre
MESH_INPUT_SIDE = 384
TILE_MIN_SIDE = 320  # detection tiles: at least this side, else half the image's shorter side

# Landmark index chains (MediaPipe face mesh topology). Lips: outer/inner contours, corner to corner.
UPPER_LIP_OUTER = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
LOWER_LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
UPPER_LIP_INNER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LOWER_LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)
NOSE_POINTS = (
    168,
    6,
    197,
    195,
    5,
    4,
    1,
    19,
    94,
    2,
    98,
    97,
    326,
    327,
    64,
    48,
    115,
    220,
    45,
    275,
    440,
    344,
    278,
    294,
)
CHIN, MOUTH_LEFT, MOUTH_RIGHT, INNER_UPPER_LIP, INNER_LOWER_LIP = 152, 61, 291, 13, 14
CHEEKS = (50, 280, 101, 330)  # skin samples for the hair colour test
MOUTH_OPEN_RATIO = 0.08  # lip gap / mouth width above which the mouth counts as open


@cache
def _loops() -> dict[str, tuple[int, ...]]:
    fm = graphs.solutions().face_mesh
    return {
        "oval": _ordered_loop(fm.FACEMESH_FACE_OVAL),
        "l_eye": _ordered_loop(fm.FACEMESH_LEFT_EYE),
        "r_eye": _ordered_loop(fm.FACEMESH_RIGHT_EYE),
        "l_brow": _brow_loop(fm.FACEMESH_LEFT_EYEBROW),
        "r_brow": _brow_loop(fm.FACEMESH_RIGHT_EYEBROW),
    }


def _ordered_loop(edges: Iterable[tuple[int, int]]) -> tuple[int, ...]:
    """Order an edge set that forms one closed contour into its vertex sequence."""
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
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
    neighbours: dict[int, list[int]] = {}
    for a, b in edges:
        neighbours.setdefault(a, []).append(b)
        neighbours.setdefault(b, []).append(a)
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
        pts = self.points(_loops()["oval"])
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


def _element(name: str | None, alpha: np.ndarray, margin: int = 2) -> ElementMask | None:
    box = bounding_box(alpha > 0)
    if box is None:
        return None
    x, y, w, h = box
    x0, y0 = max(0, x - margin), max(0, y - margin)
    x1, y1 = min(alpha.shape[1], x + w + margin), min(alpha.shape[0], y + h + margin)
    return ElementMask(name, (x0, y0, x1 - x0, y1 - y0), np.ascontiguousarray(alpha[y0:y1, x0:x1]))


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

    def _detect(self, image: np.ndarray) -> list[tuple[float, tuple[float, float, float, float]]]:
        found = [*self._detect_in(self._detector, image, 0, 0)]
        # The detector sees a 192×192 letterbox of its input, so a face 30 px wide in a 1024 px group photo
        # shrinks to 6 px and is missed: look again in overlapping square tiles.
        height, width = image.shape[:2]
        for side in _tile_sides(height, width):
            stride = max(1, side * 3 // 4)
            for y in _tile_starts(height, side, stride):
                for x in _tile_starts(width, side, stride):
                    tile = np.ascontiguousarray(image[y : y + side, x : x + side])
                    found.extend(self._detect_in(self._detector, tile, x, y))
        if not found:
            found.extend(self._detect_in(self._near_detector, image, 0, 0))
        return _suppress(sorted(found, key=lambda item: -item[0]))[:MAX_FACES]

    @staticmethod
    def _detect_in(
        detector: Any, image: np.ndarray, dx: int, dy: int
    ) -> list[tuple[float, tuple[float, float, float, float]]]:
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

    def detect(self, image: np.ndarray) -> list[tuple[float, tuple[float, float, float, float]]]:
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
        union = np.zeros(shape, dtype=np.uint8)
        elements = []
        for face in self.faces(image):
            alpha = polygon_alpha(shape, face.points(_loops()["oval"]))
            element = _element(None, alpha)
            if element is not None:
                elements.append(element)
                np.maximum(union, alpha, out=union)
        return Segmentation(union, elements)


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


def _suppress(
    detections: list[tuple[float, tuple[float, float, float, float]]], overlap: float = 0.4
) -> list[tuple[float, tuple[float, float, float, float]]]:
    """Non-maximum suppression over (score, box) pairs sorted by score. Overlap is measured against the
    smaller box, so a half face found at a tile's edge does not count as a second face."""
    kept: list[tuple[float, tuple[float, float, float, float]]] = []
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


def _head_alpha(face: Face, person: np.ndarray) -> np.ndarray:
    """One face's head: the person mask near the face, above the jaw line, joined with the face oval."""
    height, width = person.shape
    oval = face.points(_loops()["oval"])
    face_alpha = polygon_alpha((height, width), oval)
    x0, y0 = oval[:, 0].min(), oval[:, 1].min()
    x1, y1 = oval[:, 0].max(), oval[:, 1].max()
    fw, fh = x1 - x0, y1 - y0
    chin_y = float(face.landmarks[CHIN, 1])
    region = np.zeros((height, width), dtype=bool)
    rx, ry, rw, rh = clamp_box(x0 - 0.6 * fw, y0 - 0.9 * fh, x1 + 0.6 * fw, chin_y + 1, width, height)
    region[ry : ry + rh, rx : rx + rw] = True
    # Beside the face, stop a little above the chin: below that it is shoulders and collars.
    side_bottom = int(max(0, chin_y - 0.15 * fh))
    region[side_bottom:, : int(x0)] = False
    region[side_bottom:, int(np.ceil(x1)) :] = False
    # Under the jaw (inside the oval's columns, below its outline) is neck, not head.
    lower = oval[oval[:, 1] > (y0 + y1) / 2]
    jaw = np.concatenate([lower[np.argsort(lower[:, 0])], [[x1, height], [x0, height]]])
    region &= ~(polygon_alpha((height, width), jaw) > 0) | (face_alpha > 0)
    head = np.where(region, person, 0)
    head = np.maximum(head, face_alpha)
    keep = components_touching(head >= 128, face_alpha >= 128)
    return np.where(dilate(keep, 1), head, 0).astype(np.uint8)


def components_touching(binary: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The connected components of `binary` that overlap `seed`."""
    count, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        return binary.astype(bool)
    touching = np.unique(labels[seed & binary])
    return np.isin(labels, touching[touching > 0])


def _skin_like(image: np.ndarray, face: Face) -> np.ndarray:
    """Pixels whose colour is close to the cheeks' (Lab distance), for telling ears and neck from hair."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    samples = []
    for index in CHEEKS:
        x, y = face.landmarks[index]
        xi, yi = int(np.clip(x, 2, image.shape[1] - 3)), int(np.clip(y, 2, image.shape[0] - 3))
        samples.append(lab[yi - 2 : yi + 3, xi - 2 : xi + 3].reshape(-1, 3))
    skin = np.median(np.concatenate(samples), axis=0)
    distance = np.linalg.norm((lab - skin) * np.array([0.5, 1.0, 1.0], dtype=np.float32), axis=2)
    return np.asarray(distance < 14.0)


class _FaceFamily(Segmenter):
    """Base of the segmenters built on `face` (and the person mask)."""

    def __init__(self) -> None:
        super().__init__()
        self._faces = get_typed("face", FaceSegmenter)

    def _person(self, image: np.ndarray) -> np.ndarray:
        from segflow_engine.segmenters.person import PersonSegmenter

        return get_typed("person", PersonSegmenter).segment(image).mask

    def _segment_faces(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        raise NotImplementedError

    def segment(self, image: np.ndarray) -> Segmentation:
        faces = self._faces.faces(image)
        union = np.zeros(image.shape[:2], dtype=np.uint8)
        elements = []
        for alpha in self._segment_faces(image, faces) if faces else []:
            element = _element(None, alpha)
            if element is not None:
                elements.append(element)
                np.maximum(union, alpha, out=union)
        return Segmentation(union, elements)


@register
class HeadSegmenter(_FaceFamily):
    name = "head"

    def _segment_faces(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        person = self._person(image)
        return [_head_alpha(face, person) for face in faces]


@register
class HairSegmenter(_FaceFamily):
    name = "hair"

    def _segment_faces(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        person = self._person(image)
        shape = image.shape[:2]
        out = []
        for face in faces:
            head = _head_alpha(face, person)
            oval = polygon_alpha(shape, face.points(_loops()["oval"])) > 0
            box = face.oval_box(shape[1], shape[0])
            margin = max(1, round(0.02 * box[2]))
            hair = (head >= 128) & ~dilate(oval, margin) & ~_skin_like(image, face)
            hair = erode(dilate(hair, margin), margin)  # close pinholes between strands
            hair = largest_components(hair & (head >= 128), keep_ratio=0.1)
            out.append(np.where(hair, head, 0).astype(np.uint8))
        return out


PART_ORDER = ("skin", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "u_lip", "l_lip")
PRIORITY = ("l_eye", "r_eye", "mouth", "u_lip", "l_lip", "l_brow", "r_brow", "nose", "skin")


def parse_face_parts(shape: tuple[int, int], face: Face) -> dict[str, np.ndarray]:
    """The face-part alphas (uint8) of one face; disjoint at alpha ≥ 128, `skin` is what the others leave."""
    loops = _loops()
    parts: dict[str, np.ndarray] = {}
    for name in ("l_eye", "r_eye", "l_brow", "r_brow"):
        parts[name] = polygon_alpha(shape, face.points(loops[name]))
    nose_points = face.points(NOSE_POINTS)
    parts["nose"] = polygon_alpha(shape, cv2.convexHull(nose_points.astype(np.float32))[:, 0, :])
    upper = polygon_alpha(shape, face.points(UPPER_LIP_OUTER + UPPER_LIP_INNER[::-1]))
    lower = polygon_alpha(shape, face.points(LOWER_LIP_OUTER + LOWER_LIP_INNER[::-1]))
    inner = polygon_alpha(shape, face.points(UPPER_LIP_INNER + LOWER_LIP_INNER[::-1][1:-1]))
    gap = float(np.linalg.norm(face.landmarks[INNER_UPPER_LIP] - face.landmarks[INNER_LOWER_LIP]))
    width = float(np.linalg.norm(face.landmarks[MOUTH_LEFT] - face.landmarks[MOUTH_RIGHT]))
    if width > 0 and gap / width > MOUTH_OPEN_RATIO and inner.any():
        parts["mouth"] = inner
    parts["u_lip"], parts["l_lip"] = upper, lower
    parts["skin"] = polygon_alpha(shape, face.points(loops["oval"]))
    # Make the parts disjoint: where outlines overlap, the smaller, more specific part wins.
    taken = np.zeros(shape, dtype=bool)
    for name in PRIORITY:
        if name in parts:
            parts[name] = np.where(taken, 0, parts[name]).astype(np.uint8)
            taken |= parts[name] >= 128
    return {name: parts[name] for name in PART_ORDER if name in parts}


@register
class ParseFaceSegmenter(Segmenter):
    """ParseFace: the parts of the most confident face, each as a named element."""

    name = "parse_face"

    def __init__(self) -> None:
        super().__init__()
        self._faces = get_typed("face", FaceSegmenter)

    def segment(self, image: np.ndarray) -> Segmentation:
        faces = self._faces.faces(image)
        shape = image.shape[:2]
        if not faces:
            return Segmentation(np.zeros(shape, dtype=np.uint8), [])
        parts = parse_face_parts(shape, faces[0])
        elements = [e for name, alpha in parts.items() if (e := _element(name, alpha, margin=0)) is not None]
        union = np.zeros(shape, dtype=np.uint8)
        for alpha in parts.values():
            np.maximum(union, alpha, out=union)
        return Segmentation(union, elements)
