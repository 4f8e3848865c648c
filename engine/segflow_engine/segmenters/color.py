"""Colour-only segmenters, no model: green-screen chroma keying (with spill suppression) and stamp ink.

Both measure their colour on the image itself (`screen_key`, `stamp_alpha`), so lighting and ink vary
freely; `despill` clamps green to the mean of red and blue for cut-outs.
"""

from __future__ import annotations

import cv2
import numpy as np

from segflow_engine.segmenters.base import Segmentation, Segmenter, register
from segflow_engine.segmenters.imageops import disk, largest_components

FALLBACK_KEY_CRCB = (60.0, 90.0)  # chroma of a typical studio green, used when the frame shows too little
SOFT_BAND = 18.0  # chroma units over which alpha ramps from 0 to 1
MIN_SCREEN_FRACTION = 0.02


def screen_key(ycrcb: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, float]:
    """The key chroma (Cr, Cb), the median of the frame's clearly green pixels, and the tolerance radius
    measured on them.

    Measured on every 4th pixel each way: the screen covers most of the frame, so 1/16 of it is plenty and
    keeps a 720p frame's key under a few milliseconds."""
    rgb = image[::4, ::4].astype(np.int16)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    green = (g > 50) & (g > r + 30) & (g > b + 30)
    chroma = ycrcb[::4, ::4, 1:].astype(np.float32)
    if green.mean() < MIN_SCREEN_FRACTION:
        return np.array(FALLBACK_KEY_CRCB, dtype=np.float32), 12.0
    samples = chroma[green]
    key = np.median(samples, axis=0)
    spread = np.linalg.norm(samples - key, axis=1)
    return key, float(np.clip(np.percentile(spread, 97) + 2.0, 6.0, 40.0))


def chroma_key_alpha(image: np.ndarray) -> np.ndarray:
    """Foreground alpha (H×W uint8) of a frame shot against a green screen: it ramps with the chroma
    distance (Cr, Cb in YCrCb) from the screen's own colour, between a tolerance set by the screen's spread
    and that plus a soft band; so uneven lighting and noise stay background and green spill on hair and
    edges comes out semi-transparent."""
    ycrcb = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YCrCb)
    key, tolerance = screen_key(ycrcb, image)
    cr = ycrcb[..., 1].astype(np.float32) - float(key[0])
    cb = ycrcb[..., 2].astype(np.float32) - float(key[1])
    distance = cv2.magnitude(cr, cb)
    # alpha = clip((distance - tolerance) / SOFT_BAND, 0, 1) * 255, saturated to uint8 by OpenCV.
    scale = 255.0 / SOFT_BAND
    alpha = cv2.convertScaleAbs(np.maximum(distance - tolerance, 0.0), alpha=scale)
    return np.asarray(cv2.medianBlur(alpha, 3))  # sensor noise on the screen


def despill(image: np.ndarray) -> np.ndarray:
    """Green spill suppressed: green never exceeds the mean of red and blue."""
    rgb = image.astype(np.int16)
    limit = (rgb[..., 0] + rgb[..., 2]) // 2
    out = rgb.copy()
    out[..., 1] = np.minimum(rgb[..., 1], limit)
    return out.astype(np.uint8)


@register
class GreenScreenSegmenter(Segmenter):
    name = "greenscreen"

    def segment(self, image: np.ndarray) -> Segmentation:
        return Segmentation(chroma_key_alpha(image))


INK_MIN_CHROMA = 28.0  # how far from grey (in Lab a/b units) a pixel must be to count as ink


def stamp_alpha(image: np.ndarray) -> np.ndarray:
    """Stamp-ink alpha (H×W uint8): the pixels whose chroma leans strongly to the ink's hue, red or blue,
    whichever has more strongly coloured pixels; small gaps (text under the ink) closed, specks dropped."""
    lab = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB).astype(np.float32)
    a, b = lab[..., 1] - 128.0, lab[..., 2] - 128.0
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a)) % 360.0
    red = (chroma > INK_MIN_CHROMA) & ((hue < 60.0) | (hue > 330.0))
    blue = (chroma > INK_MIN_CHROMA) & (hue > 230.0) & (hue < 320.0)
    ink = red if red.sum() >= blue.sum() else blue
    if not ink.any():
        return np.zeros(image.shape[:2], dtype=np.uint8)
    radius = max(1, round(0.006 * max(image.shape[:2])))
    closed = cv2.morphologyEx(ink.astype(np.uint8), cv2.MORPH_CLOSE, disk(radius)) > 0
    return (largest_components(closed, keep_ratio=0.002) * 255).astype(np.uint8)


@register
class StampSegmenter(Segmenter):
    name = "stamp"

    def segment(self, image: np.ndarray) -> Segmentation:
        return Segmentation(stamp_alpha(image))
