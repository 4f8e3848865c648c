"""Small array helpers the segmenters share (OpenCV for speed; all masks are uint8 0..255)."""

from __future__ import annotations

import cv2
import numpy as np


def to_uint8(probability: np.ndarray) -> np.ndarray:
    """A 0..1 float map as a 0..255 uint8 mask."""
    return np.clip(probability * 255.0 + 0.5, 0, 255).astype(np.uint8)


def resize(array: np.ndarray, width: int, height: int) -> np.ndarray:
    if array.shape[1] == width and array.shape[0] == height:
        return array
    shrinking = width < array.shape[1] and height < array.shape[0]
    return cv2.resize(array, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def disk(radius: int) -> np.ndarray:
    size = 2 * max(radius, 0) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def dilate(binary: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a bool mask by a disk of `radius` pixels."""
    if radius <= 0:
        return binary
    return cv2.dilate(binary.astype(np.uint8), disk(radius)).astype(bool)


def erode(binary: np.ndarray, radius: int) -> np.ndarray:
    if radius <= 0:
        return binary
    return cv2.erode(binary.astype(np.uint8), disk(radius), borderType=cv2.BORDER_REPLICATE).astype(bool)


def fill_polygon(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """A bool mask of `shape` with the polygon `points` (N×2 x, y pixel coordinates) filled."""
    canvas = np.zeros(shape, dtype=np.uint8)
    if len(points) >= 3:
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1, lineType=cv2.LINE_8)
    return canvas.astype(bool)


def largest_components(binary: np.ndarray, keep_ratio: float = 0.05) -> np.ndarray:
    """Drop specks: keep connected components at least `keep_ratio` of the largest one."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 2:
        return binary.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= keep_ratio * areas.max()) + 1
    return np.isin(labels, keep)


def bounding_box(binary: np.ndarray) -> tuple[int, int, int, int] | None:
    """x, y, width, height of the set pixels, or None when there are none."""
    ys, xs = np.nonzero(binary)
    if len(xs) == 0:
        return None
    x0, y0 = int(xs.min()), int(ys.min())
    return x0, y0, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1


def clamp_box(
    x0: float, y0: float, x1: float, y1: float, width: int, height: int
) -> tuple[int, int, int, int]:
    """A float box clipped to the image, as integer x, y, width, height (at least 1×1)."""
    left, top = max(0, int(np.floor(x0))), max(0, int(np.floor(y0)))
    right, bottom = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
    return left, top, max(1, right - left), max(1, bottom - top)
