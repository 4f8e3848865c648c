"""Streaming video in, mask video out (PyAV): one decoded frame at a time, so memory stays flat in length.

The mask video has the source's size, frame count and frame rate: H.264 in MP4, luma = alpha (chroma
neutral). yuv420p when both sides are even (plays everywhere), else 4:0:0 grey (H.264 High profile), since
4:2:0 needs even sides and the size must not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from segflow.errors import InputValidationError

DEFAULT_FPS = Fraction(25)
FrameFn = Callable[[np.ndarray], np.ndarray]  # H×W×3 uint8 RGB -> H×W uint8 mask


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    width: int
    height: int
    fps: float


def _rate(stream: object) -> Fraction:
    for name in ("average_rate", "guessed_rate", "base_rate"):
        rate = getattr(stream, name, None)
        if rate:
            value = Fraction(rate)
            if 0 < value <= 240:
                return value.limit_denominator(1001)
    return DEFAULT_FPS


def process_video(src: Path, dst: Path, frame_fn: FrameFn, *, crf: int = 20) -> VideoInfo:
    """Run `frame_fn` on every frame of `src` and encode the masks into `dst` (mp4, H.264)."""
    import av

    try:
        source = av.open(str(src))
    except av.error.FFmpegError as exc:
        raise InputValidationError(f"the video cannot be opened: {exc}", code="InvalidFile.Decode") from exc
    with source:
        if not source.streams.video:
            raise InputValidationError("the file has no video stream", code="InvalidFile.Content")
        video_in = source.streams.video[0]
        video_in.thread_type = "AUTO"
        rate = _rate(video_in)
        frames = 0
        width = height = 0
        with av.open(str(dst), mode="w", format="mp4") as sink:
            out = None
            try:
                for frame in source.decode(video_in):
                    rgb = frame.to_ndarray(format="rgb24")
                    mask = np.ascontiguousarray(frame_fn(rgb), dtype=np.uint8)
                    if out is None:
                        height, width = rgb.shape[:2]
                        out = sink.add_stream("libx264", rate=rate)
                        out.width, out.height = width, height
                        out.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "gray"
                        out.options = {"crf": str(crf), "preset": "veryfast"}
                    picture = av.VideoFrame.from_ndarray(mask, format="gray")
                    if out.pix_fmt != "gray":
                        picture = picture.reformat(format=out.pix_fmt)
                    picture.pts = frames
                    for packet in out.encode(picture):
                        sink.mux(packet)
                    frames += 1
            except av.error.FFmpegError as exc:
                raise InputValidationError(
                    f"the video cannot be decoded: {exc}", code="InvalidFile.Decode"
                ) from exc
            if out is None:
                raise InputValidationError("the video has no frames", code="InvalidFile.Content")
            for packet in out.encode():
                sink.mux(packet)
    return VideoInfo(frames, width, height, float(rate))
