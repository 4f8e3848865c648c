"""Heads, hair and face parts, built on the faces `facedetect` finds (each with its 478 mesh landmarks).

- head: the person mask (see `person`) inside a box grown around the face, cut under the jaw (neck), plus the
  face oval: so it includes the hair.
- hair: the head minus the face oval and minus skin-coloured pixels (ears, neck; colour taken on the cheeks).
- parse_face: the mesh regions rasterised (`parse_face_parts`).
"""

from __future__ import annotations

import cv2
import numpy as np

from segflow_engine.segmenters.base import Segmentation, Segmenter, get_typed, register
from segflow_engine.segmenters.facedetect import (
    Face,
    FaceSegmenter,
    loops,
    polygon_alpha,
    segmentation_of,
)
from segflow_engine.segmenters.imageops import clamp_box, dilate, erode, largest_components
from segflow_engine.segmenters.person import PersonSegmenter

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


def _head_alpha(face: Face, person: np.ndarray) -> np.ndarray:
    """One face's head: the person mask near the face, above the jaw line, joined with the face oval."""
    height, width = person.shape
    oval = face.points(loops()["oval"])
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
    """Base of the segmenters built on `face` and the person mask: one alpha per face found."""

    def __init__(self) -> None:
        super().__init__()
        self._faces = get_typed("face", FaceSegmenter)

    def _person(self, image: np.ndarray) -> np.ndarray:
        return get_typed("person", PersonSegmenter).segment(image).mask

    def _segment_faces(self, image: np.ndarray, faces: list[Face]) -> list[np.ndarray]:
        raise NotImplementedError

    def segment(self, image: np.ndarray) -> Segmentation:
        faces = self._faces.faces(image)
        alphas = self._segment_faces(image, faces) if faces else []
        return segmentation_of(image.shape[:2], ((None, alpha) for alpha in alphas))


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
            oval = polygon_alpha(shape, face.points(loops()["oval"])) > 0
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
    """The face-part alphas (uint8) of one face; disjoint at alpha ≥ 128, `skin` is what the others leave.
    `mouth` only when the lips are apart. `l_`/`r_` are the person's own left and right, as in MediaPipe's
    FACEMESH_LEFT_*: on an unmirrored frontal photo the person's left eye is on the image's right. No ears:
    the spec makes them optional, and the mesh does not cover them."""
    outlines = loops()
    parts: dict[str, np.ndarray] = {}
    for name in ("l_eye", "r_eye", "l_brow", "r_brow"):
        parts[name] = polygon_alpha(shape, face.points(outlines[name]))
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
    parts["skin"] = polygon_alpha(shape, face.points(outlines["oval"]))
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
        parts = parse_face_parts(shape, faces[0]) if faces else {}
        return segmentation_of(shape, parts.items(), margin=0)
