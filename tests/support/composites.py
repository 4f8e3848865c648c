"""Known-truth test images: a known foreground pasted onto backgrounds, so the true mask is exact.

Sources are scikit-image's bundled photos (nothing downloaded):
- the person: the astronaut photo's head and torso (rows 0..335), cut by `data/astronaut_person_mask.png`.
  That reference mask was made once from ISNet on the original photo (threshold 0.5, largest component) and
  checked by eye; the flag, the rocket and the helmet are outside it. Pasted onto a *different* background,
  the mask is the exact truth of the composite whatever model made it.
- objects: the scikit-image logo disc (the convex hull of its non-white pixels) and the `horse` silhouette
  filled with shaded bronze.
- green screen, stamps and video clips are drawn here from the same pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from skimage import data

DATA_DIR = Path(__file__).parent / "data"
PERSON_ROWS = 336


@dataclass(frozen=True)
class Composite:
    image: np.ndarray  # HxWx3 uint8 RGB
    truth: np.ndarray  # HxW bool, True = foreground


def iou(predicted: np.ndarray, truth: np.ndarray, threshold: int = 128) -> float:
    """Intersection over union of a 0..255 (or bool) predicted mask and a boolean truth."""
    pred = predicted >= threshold if predicted.dtype != bool else predicted
    union = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / union) if union else 1.0


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


@cache
def background(name: str, width: int = 512, height: int = 512) -> np.ndarray:
    """A background photo or texture, resized to width×height RGB."""
    sources = {
        "gravel": lambda: _rgb(data.gravel()),
        "brick": lambda: _rgb(data.brick()),
        "grass": lambda: (_rgb(data.grass()) * np.array([0.55, 0.9, 0.45])).astype(np.uint8),
        "coffee": data.coffee,
        "rocket": data.rocket,
        "chelsea": data.chelsea,
        "paper": lambda: _paper(height, width),
    }
    image = sources[name]()
    out = _resize(image, width, height) if image.shape[:2] != (height, width) else image
    out.setflags(write=False)
    return out


def _paper(height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    base = np.array([236, 230, 214], dtype=np.float32)
    noise = ndimage.gaussian_filter(rng.normal(0, 6, (height, width)), 1.5)[..., None]
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def paste(foreground: np.ndarray, mask: np.ndarray, base: np.ndarray, x: int, y: int) -> Composite:
    """Paste `foreground` (h×w×3) where `mask` (h×w bool) is set, top-left at (x, y), clipped to the base."""
    out = base.copy()
    truth = np.zeros(base.shape[:2], dtype=bool)
    h, w = mask.shape
    bx0, by0 = max(x, 0), max(y, 0)
    bx1, by1 = min(x + w, base.shape[1]), min(y + h, base.shape[0])
    if bx1 <= bx0 or by1 <= by0:
        return Composite(out, truth)
    fg = foreground[by0 - y : by1 - y, bx0 - x : bx1 - x]
    m = mask[by0 - y : by1 - y, bx0 - x : bx1 - x]
    region = out[by0:by1, bx0:bx1]
    region[m] = fg[m]
    truth[by0:by1, bx0:bx1] = m
    return Composite(out, truth)


@cache
def person_cutout() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut's head and torso (336×512 RGB) and its reference mask (bool)."""
    mask = np.asarray(Image.open(DATA_DIR / "astronaut_person_mask.png").convert("L")) > 127
    return data.astronaut()[:PERSON_ROWS], mask


def person_composite(bg: str, *, size: int = 512, scale: float = 1.0, dx: int = 0) -> Composite:
    """The person standing at the bottom of a size×size background, optionally scaled and shifted sideways."""
    image, mask = person_cutout()
    if scale != 1.0:
        w, h = int(image.shape[1] * scale), int(image.shape[0] * scale)
        image = _resize(image, w, h)
        mask = _resize(mask.astype(np.uint8) * 255, w, h) > 127
    x = (size - mask.shape[1]) // 2 + dx
    return paste(image, mask, background(bg, size, size), x, size - mask.shape[0])


@cache
def logo_disc() -> tuple[np.ndarray, np.ndarray]:
    logo = data.logo()[..., :3]
    from skimage.morphology import convex_hull_image

    mask = convex_hull_image(logo.min(axis=2) < 235)  # the disc, including the white "S" stroke across it
    return logo, mask


@cache
def bronze_horse() -> tuple[np.ndarray, np.ndarray]:
    """The `horse` silhouette as a shaded bronze figurine (lit from the top-left)."""
    mask = ~data.horse()
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 0.55 + 0.45 * (1 - (xx / w + yy / h) / 2)
    depth = ndimage.distance_transform_edt(mask)
    rim = np.clip(depth / 12.0, 0.0, 1.0) * 0.35 + 0.65
    shade = (light * rim)[..., None]
    image = np.clip(np.array([190, 120, 55], dtype=np.float32) * shade, 0, 255).astype(np.uint8)
    return image, mask


def object_composite(obj: str, bg: str, *, size: int = 512, scale: float = 0.7) -> Composite:
    """A known object ("logo" or "horse") centred on a size×size background at `scale` of the side."""
    image, mask = logo_disc() if obj == "logo" else bronze_horse()
    factor = scale * size / max(mask.shape)
    w, h = int(mask.shape[1] * factor), int(mask.shape[0] * factor)
    image = _resize(image, w, h)
    mask = _resize(mask.astype(np.uint8) * 255, w, h) > 127
    return paste(image, mask, background(bg, size, size), (size - w) // 2, (size - h) // 2)


def green_screen_frame(*, size: tuple[int, int] = (320, 240), dx: int = 0, seed: int = 0) -> Composite:
    """The person in front of an unevenly lit green screen, with green spill on the person's edges."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    light = 0.8 + 0.2 * np.cos((xx / width - 0.3) * 2.5) * np.cos((yy / height - 0.4) * 2.0)
    screen = np.array([40, 190, 60], dtype=np.float32) * light[..., None]
    screen += rng.normal(0, 4, screen.shape)
    base = np.clip(screen, 0, 255).astype(np.uint8)
    person, mask = person_cutout()
    factor = 0.9 * height / person.shape[0]
    w, h = int(person.shape[1] * factor), int(person.shape[0] * factor)
    small = _resize(person, w, h).astype(np.float32)
    small_mask = _resize(mask.astype(np.uint8) * 255, w, h) > 127
    edge = small_mask & ~ndimage.binary_erosion(small_mask, iterations=2)
    small[edge] = small[edge] * 0.6 + np.array([40, 190, 60]) * 0.4  # spill: the screen's light on the rim
    return paste(small.astype(np.uint8), small_mask, base, (width - w) // 2 + dx, height - h)


def stamp_image(size: int = 400) -> Composite:
    """A red round seal (ring, star and strokes, uneven ink) over black printed text on paper."""
    paper = background("paper", size, size).copy()
    text = Image.fromarray(paper)
    draw = ImageDraw.Draw(text)
    for row in range(30, size - 20, 22):
        draw.text((20, row), "Contract no. 2026-11 signed and sealed by both parties " * 2, fill=(20, 20, 25))
    page = np.asarray(text).copy()
    ink = Image.new("L", (size, size), 0)
    ink_draw = ImageDraw.Draw(ink)
    c, r = size // 2, int(size * 0.32)
    ink_draw.ellipse((c - r, c - r, c + r, c + r), outline=255, width=9)
    star = [
        (c + int(r * 0.35 * f * np.cos(a)), c + int(r * 0.35 * f * np.sin(a)))
        for i, a in enumerate(np.linspace(-np.pi / 2, 3 * np.pi / 2, 11)[:-1])
        for f in [1.0 if i % 2 == 0 else 0.4]
    ]
    ink_draw.polygon(star, fill=255)
    for k in range(6):
        y = c + int(r * 0.45) + (k // 3) * 18 - 4
        x = c - int(r * 0.55) + (k % 3) * int(r * 0.4)
        ink_draw.rectangle((x, y, x + int(r * 0.3), y + 6), fill=255)
    truth = np.asarray(ink) > 127
    rng = np.random.default_rng(3)
    strength = np.clip(0.75 + ndimage.gaussian_filter(rng.normal(0, 0.25, truth.shape), 3), 0.45, 1.0)
    red = np.array([200, 30, 40], dtype=np.float32)
    blend = (strength * truth)[..., None]
    # Ink multiplies the paper (and the printed text under it), as real stamp ink does.
    inked = page.astype(np.float32) * (1 - blend) + (page.astype(np.float32) * red / 255.0) * blend
    return Composite(np.clip(inked, 0, 255).astype(np.uint8), truth)


def person_clip_frames(
    frames: int, *, size: tuple[int, int] = (320, 240), bg: str = "rocket", step: int = 4
) -> Iterator[Composite]:
    """The person sliding sideways across a fixed background, one frame per `step` pixels."""
    width, height = size
    base = background(bg, width, height)
    person, mask = person_cutout()
    factor = 0.85 * height / person.shape[0]
    w, h = int(person.shape[1] * factor), int(person.shape[0] * factor)
    small = _resize(person, w, h)
    small_mask = _resize(mask.astype(np.uint8) * 255, w, h) > 127
    start = (width - w) // 2 - (frames * step) // 2
    for i in range(frames):
        yield paste(small, small_mask, base, start + i * step, height - h)


def write_video(path: Path, frames: Iterator[np.ndarray], *, fps: int = 10, codec: str = "libx264") -> int:
    """Encode RGB frames into a video file with PyAV; returns the frame count."""
    import av

    count = 0
    with av.open(str(path), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(codec, rate=fps)
                stream.width, stream.height = frame.shape[1], frame.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": "18", "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
            count += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return count


def read_video_gray(path: Path) -> Iterator[np.ndarray]:
    """Decode a (mask) video's frames as HxW uint8 luma."""
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="gray")


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB or L array encoded as PNG, the way an uploaded image reaches the engine."""
    import io

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    import io

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def alpha_of(data: bytes) -> np.ndarray:
    """The mask a result encodes: the alpha of an RGBA PNG, or the grey of an L PNG."""
    image = decode(data)
    if image.mode == "RGBA":
        return np.asarray(image)[..., 3]
    assert image.mode == "L", image.mode
    return np.asarray(image)


def group_composite(count: int, *, width: int = 1024, height: int = 360, scale: float = 0.3) -> Composite:
    """`count` copies of the person side by side (for face-count limits); truth = all of them."""
    image, mask = person_cutout()
    w, h = int(image.shape[1] * scale), int(image.shape[0] * scale)
    small = _resize(image, w, h)
    small_mask = _resize(mask.astype(np.uint8) * 255, w, h) > 127
    base = background("gravel", width, height)
    truth = np.zeros((height, width), dtype=bool)
    step = width // count
    for i in range(count):
        comp = paste(small, small_mask, base, i * step + (step - w) // 2, height - h)
        base, truth = comp.image, truth | comp.truth
    return Composite(base, truth)
