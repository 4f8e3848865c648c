"""Pictures a person can look at instead of reading: contact sheets for images, frame strips for videos.

Used by `segflow run`; Pillow (and PyAV for videos) are imported inside the functions, so the layer never
pays for them at import time.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL.Image import Image

TILE = 256  # height of one panel in a contact sheet, in pixels
CHECKER = 12  # checkerboard square size


@dataclass(frozen=True)
class PlacedAlpha:
    """An alpha (or mask) image and where its top-left corner sits in the source image."""

    png: bytes
    x: int = 0
    y: int = 0


def full_alpha(source_size: tuple[int, int], pieces: Sequence[PlacedAlpha]) -> Image:
    """One full-size 8-bit alpha built from cut-outs, masks or element crops placed at their X, Y."""
    from PIL import Image, ImageChops

    alpha = Image.new("L", source_size, 0)
    for piece in pieces:
        part = Image.open(io.BytesIO(piece.png))
        part_alpha = part.getchannel("A") if part.mode in ("RGBA", "LA", "PA") else part.convert("L")
        layer = Image.new("L", source_size, 0)
        layer.paste(part_alpha, (piece.x, piece.y))
        alpha = ImageChops.lighter(alpha, layer)
    return alpha


def checkerboard(size: tuple[int, int]) -> Image:
    from PIL import Image

    width, height = size
    board = Image.new("RGB", size, (255, 255, 255))
    grey = Image.new("RGB", (CHECKER, CHECKER), (204, 204, 204))
    for y in range(0, height, CHECKER):
        for x in range((y // CHECKER) % 2 * CHECKER, width, 2 * CHECKER):
            board.paste(grey, (x, y))
    return board


def _fit(image: Image, height: int = TILE) -> Image:
    from PIL import Image as PILImage

    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), PILImage.Resampling.BILINEAR)


def compose_row(source: Image, alpha: Image) -> Image:
    """[source | mask | cut-out on a checkerboard], each scaled to the same panel height."""
    from PIL import Image

    source = _fit(source.convert("RGB"))  # scale first: the checkerboard keeps its size on big images
    alpha = alpha.resize(source.size)
    cutout = checkerboard(source.size)
    cutout.paste(source, (0, 0), alpha)
    panels = [source, alpha.convert("RGB"), cutout]
    gap = 6
    row = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), TILE), (40, 40, 40))
    x = 0
    for panel in panels:
        row.paste(panel, (x, 0))
        x += panel.width + gap
    return row


def contact_sheet(source_bytes: bytes, pieces: Sequence[PlacedAlpha], destination: Path) -> Path:
    """Write the contact sheet of one image result to `destination` (PNG) and return it."""
    from PIL import Image

    source = Image.open(io.BytesIO(source_bytes))
    source.load()
    row = compose_row(source, full_alpha(source.size, pieces))
    destination.parent.mkdir(parents=True, exist_ok=True)
    row.save(destination)
    return destination


def _sample_frames(path: Path, count: int) -> list[Image]:
    """`count` frames spread over the clip, decoded as a stream (only the chosen frames are kept)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 0
        if total <= 0:
            total = sum(1 for _ in container.decode(video=0))
            container.seek(0)
        wanted = {round(i * (total - 1) / max(count - 1, 1)) for i in range(count)} if total else set()
        frames = [
            frame.to_image()  # type: ignore[no-untyped-call]
            for index, frame in enumerate(container.decode(video=0))
            if index in wanted
        ]
    return frames


def video_strip(source_video: Path, mask_video: Path, destination: Path, *, count: int = 6) -> Path:
    """Rows of source frames, mask frames and cut-outs on a checkerboard, `count` frames across the clip."""
    from PIL import Image

    sources = _sample_frames(source_video, count)
    masks = _sample_frames(mask_video, count)
    rows = [compose_row(src, mask.convert("L")) for src, mask in zip(sources, masks, strict=False)]
    if not rows:
        raise ValueError(f"no frames could be decoded from {source_video.name} / {mask_video.name}")
    gap = 6
    sheet = Image.new(
        "RGB", (max(r.width for r in rows), sum(r.height for r in rows) + gap * (len(rows) - 1)), (40, 40, 40)
    )
    y = 0
    for row in rows:
        sheet.paste(row, (0, y))
        y += row.height + gap
    destination.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(destination)
    return destination
