"""Video person segmentation: per-frame MediaPipe masks, temporally smoothed, one stateful stream per video.

Each stream owns its graphs (selfie segmentation + pose in tracking mode, which carries the person from
frame to frame), so concurrent video jobs never share a graph and need no lock. ISNet is not used here: at
2–3 s a frame a minute of video would take an hour; the MediaPipe pair runs many frames a second.
Smoothing: an exponential moving average of the probability, except where it changes a lot (motion), so a
moving person leaves no ghost. Half body keeps what is above the hips (pose landmarks 23/24, themselves
smoothed), with a short soft ramp; when the hips are out of view nothing is cut.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import numpy as np

from segflow_engine.segmenters import graphs
from segflow_engine.segmenters.base import Segmentation, Segmenter, get_typed, register
from segflow_engine.segmenters.color import chroma_key_alpha
from segflow_engine.segmenters.imageops import to_uint8

SMOOTHING = 0.6  # weight of the new frame in the moving average
MOTION_DELTA = 0.35  # a probability change above this is motion: take the new value as is
HIP_VISIBILITY = 0.5
LEFT_HIP, RIGHT_HIP = 23, 24
HIP_RAMP_FRACTION = 0.02  # soft edge of the half-body cut, as a fraction of the frame height


class FrameStream(Protocol):
    def mask(self, frame: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


def smooth(previous: np.ndarray | None, current: np.ndarray) -> np.ndarray:
    """Temporal smoothing of 0..1 probability maps (float32)."""
    if previous is None or previous.shape != current.shape:
        return current
    blended = SMOOTHING * current + (1.0 - SMOOTHING) * previous
    return np.where(np.abs(current - previous) > MOTION_DELTA, current, blended).astype(np.float32)


def cut_below(probability: np.ndarray, cut_y: float | None) -> np.ndarray:
    """Keep what is above row `cut_y` (soft ramp); unchanged when `cut_y` is None."""
    if cut_y is None:
        return probability
    height = probability.shape[0]
    ramp = max(1.0, HIP_RAMP_FRACTION * height)
    rows = np.arange(height, dtype=np.float32)
    keep = np.clip((cut_y + ramp / 2 - rows) / ramp, 0.0, 1.0)
    return np.asarray(probability * keep[:, None], dtype=np.float32)


def hip_row(landmarks: Any, height: int) -> float | None:
    """The hips' row in pixels when at least one hip is confidently in the frame."""
    if landmarks is None:
        return None
    ys = [
        landmarks.landmark[i].y * height
        for i in (LEFT_HIP, RIGHT_HIP)
        if landmarks.landmark[i].visibility >= HIP_VISIBILITY and 0.0 <= landmarks.landmark[i].y <= 1.0
    ]
    return float(np.mean(ys)) if ys else None


class PersonStream:
    """One video's person masks; `half_body` cuts below the hips."""

    def __init__(self, *, half_body: bool = False) -> None:
        self._selfie = graphs.selfie_segmentation(landscape=False)
        self._pose = graphs.pose(static_image_mode=False)
        self._half_body = half_body
        self._previous: np.ndarray | None = None
        self._hip: float | None = None

    def probability(self, frame: np.ndarray) -> np.ndarray:
        frame = np.ascontiguousarray(frame)
        selfie = self._selfie.process(frame).segmentation_mask
        pose = self._pose.process(frame)
        probability = selfie.astype(np.float32)
        if pose.segmentation_mask is not None and pose.pose_landmarks is not None:
            probability = np.maximum(probability, pose.segmentation_mask.astype(np.float32))
        probability = smooth(self._previous, probability)
        self._previous = probability
        if self._half_body:
            hip = hip_row(pose.pose_landmarks, frame.shape[0])
            if hip is not None:
                self._hip = hip if self._hip is None else SMOOTHING * hip + (1.0 - SMOOTHING) * self._hip
            else:
                self._hip = None
            probability = cut_below(probability, self._hip)
        return probability

    def mask(self, frame: np.ndarray) -> np.ndarray:
        return to_uint8(self.probability(frame))

    def close(self) -> None:
        self._selfie.close()
        self._pose.close()


class GreenScreenStream:
    def mask(self, frame: np.ndarray) -> np.ndarray:
        return chroma_key_alpha(frame)

    def close(self) -> None:
        return None


@contextmanager
def open_stream(name: str) -> Iterator[FrameStream]:
    """A fresh stateful stream for one video: "video_person", "half_body" or "greenscreen"."""
    stream: FrameStream
    if name == "video_person":
        stream = PersonStream()
    elif name == "half_body":
        stream = PersonStream(half_body=True)
    elif name == "greenscreen":
        stream = GreenScreenStream()
    else:
        raise KeyError(f"no video segmenter named {name!r}")
    try:
        yield stream
    finally:
        stream.close()


@register
class VideoPersonSegmenter(Segmenter):
    """Single frames (no history) with the video person model; videos use `open_stream`."""

    name = "video_person"

    def segment(self, image: np.ndarray) -> Segmentation:
        from segflow_engine.segmenters.person import PosePersonSegmenter

        return get_typed("pose_person", PosePersonSegmenter).segment(image)


@register
class HalfBodySegmenter(Segmenter):
    name = "half_body"

    def segment(self, image: np.ndarray) -> Segmentation:
        from segflow_engine.segmenters.person import PosePersonSegmenter

        model = get_typed("pose_person", PosePersonSegmenter)
        mask = model.segment(image).mask
        pose = model.pose(image)
        if pose.landmarks is None:
            return Segmentation(mask)
        hips = pose.landmarks[[LEFT_HIP, RIGHT_HIP]]
        seen = hips[(hips[:, 3] >= HIP_VISIBILITY) & (hips[:, 1] >= 0) & (hips[:, 1] < image.shape[0])]
        cut = float(seen[:, 1].mean()) if len(seen) else None
        return Segmentation(to_uint8(cut_below(mask.astype(np.float32) / 255.0, cut)))
