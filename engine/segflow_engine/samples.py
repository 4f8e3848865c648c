"""Sample inputs for `segflow run --samples`, made from photos that scikit-image ships.

Nothing is downloaded: the photos come with the scikit-image wheel, and the two clips are built from them
here — a person clip (a slow pan and zoom across the astronaut photo, so the person moves in the frame)
and a green-screen clip (a cut-out foreground sliding over a studio green). Each sample is written under
a sub-folder that the demo's routing rules send to a different action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GREEN = (0, 177, 64)  # the usual chroma-key green (RGB)


@dataclass(frozen=True)
class Sample:
    relative_path: str  # where it goes under the input prefix, e.g. "people/astronaut.png"
    description: str


SAMPLES: tuple[Sample, ...] = (
    Sample("people/astronaut.png", "a person photo → SegmentBody (4-channel cut-out)"),
    Sample("faces/astronaut-face.jpg", "a portrait → SegmentHead (one element per head)"),
    Sample("objects/coffee.jpg", "a product shot → SegmentCommonImage (salient object)"),
    Sample("objects/rocket.jpg", "an outdoor object → SegmentCommonImage"),
    Sample("videos/astronaut-pan.mp4", "a clip with a moving person → SegmentVideoBody (async job)"),
    Sample("greenscreen/green-screen.mp4", "a green-screen clip → SegmentGreenScreenVideo (async job)"),
)

# Routing used by the demo: the same rule format SEGFLOW_RULES takes in the cloud.
SAMPLE_RULES: tuple[dict[str, object], ...] = (
    {"prefix": "people/", "media": "image", "action": "SegmentBody"},
    {"prefix": "faces/", "media": "image", "action": "SegmentHead"},
    {"prefix": "greenscreen/", "media": "video", "action": "SegmentGreenScreenVideo"},
)


def write_samples(directory: Path, *, frames: int = 36, fps: int = 12) -> list[Path]:
    """Write the samples missing under `directory` and return every sample's path.

    A sample already there is kept: x264 does not always encode the same frames to the same bytes from one
    process to the next, so writing it again could make a new version of a file a user already ran."""
    from PIL import Image
    from skimage import data

    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    astronaut = data.astronaut()
    writers: dict[str, Callable[[Path], None]] = {
        "people/astronaut.png": lambda path: Image.fromarray(astronaut).save(path),
        "faces/astronaut-face.jpg": lambda path: Image.fromarray(astronaut[0:300, 80:380]).save(
            path, quality=92
        ),
        "objects/coffee.jpg": lambda path: Image.fromarray(data.coffee()).save(path, quality=92),
        "objects/rocket.jpg": lambda path: Image.fromarray(data.rocket()).save(path, quality=92),
        "videos/astronaut-pan.mp4": lambda path: write_video(path, pan_frames(astronaut, frames), fps),
        "greenscreen/green-screen.mp4": lambda path: write_video(
            path, green_screen_frames(data.coffee(), frames), fps
        ),
    }
    for relative, write in writers.items():
        path = directory / relative
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            write(path)
        paths.append(path)
    return paths


def pan_frames(photo: np.ndarray, count: int, size: tuple[int, int] = (320, 240)) -> Iterator[np.ndarray]:
    """A crop window that drifts and zooms across the photo, resized to `size` (width, height)."""
    from PIL import Image

    height, width = photo.shape[:2]
    out_w, out_h = size
    for i in range(count):
        t = i / max(count - 1, 1)
        crop_h = int(height * (0.95 - 0.2 * t))
        crop_w = min(width, int(crop_h * out_w / out_h))
        x0 = int((width - crop_w) * t)
        y0 = int((height - crop_h) * 0.3 * t)
        crop = photo[y0 : y0 + crop_h, x0 : x0 + crop_w]
        yield np.asarray(Image.fromarray(crop).resize((out_w, out_h), Image.Resampling.BILINEAR))


def green_screen_frames(
    foreground_photo: np.ndarray, count: int, size: tuple[int, int] = (320, 240)
) -> Iterator[np.ndarray]:
    """An elliptical cut of `foreground_photo` sliding left to right over a studio green."""
    from PIL import Image

    out_w, out_h = size
    fg_h, fg_w = out_h * 2 // 3, out_w // 3
    fg = np.asarray(Image.fromarray(foreground_photo).resize((fg_w, fg_h), Image.Resampling.BILINEAR))
    yy, xx = np.mgrid[0:fg_h, 0:fg_w]
    inside = ((xx - fg_w / 2) / (fg_w / 2)) ** 2 + ((yy - fg_h / 2) / (fg_h / 2)) ** 2 <= 1.0
    for i in range(count):
        frame = np.empty((out_h, out_w, 3), np.uint8)
        frame[:] = GREEN
        x0 = int((out_w - fg_w) * i / max(count - 1, 1))
        y0 = (out_h - fg_h) // 2
        region = frame[y0 : y0 + fg_h, x0 : x0 + fg_w]
        region[inside] = fg[inside]
        yield frame


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int) -> None:
    """Encode RGB frames as H.264 in MP4 with PyAV (its wheel bundles FFmpeg and x264)."""
    import av

    with av.open(str(path), "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
