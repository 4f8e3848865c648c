"""Contact sheets: [input | mask | cut-out on a checkerboard], element crops placed at their X, Y."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from segflow_cli.preview import TILE, PlacedAlpha, contact_sheet, full_alpha


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_element_crops_are_placed_at_their_box_in_the_full_alpha() -> None:
    crop = Image.new("L", (10, 20), 255)  # a SegmentHead element: a crop with X, Y in the source

    alpha = np.asarray(full_alpha((100, 80), [PlacedAlpha(_png(crop), x=30, y=40)]))

    assert alpha.shape == (80, 100)
    assert alpha[40:60, 30:40].min() == 255
    assert alpha.sum() == 255 * 10 * 20, "nothing outside the box"


def test_rgba_cutouts_contribute_their_alpha_channel() -> None:
    cutout = Image.new("RGBA", (50, 50), (200, 10, 10, 0))
    cutout.paste((200, 10, 10, 255), (0, 0, 25, 50))

    alpha = np.asarray(full_alpha((50, 50), [PlacedAlpha(_png(cutout))]))

    assert alpha[:, :25].min() == 255 and alpha[:, 25:].max() == 0


def test_sheet_shows_input_mask_and_cutout_on_a_checkerboard(tmp_path: Path) -> None:
    source = Image.new("RGB", (512, 512), (255, 0, 0))
    mask = Image.new("L", (512, 512), 0)
    mask.paste(255, (0, 0, 256, 512))  # the left half is the subject

    sheet = Image.open(contact_sheet(_png(source), [PlacedAlpha(_png(mask))], tmp_path / "sheet.png"))

    assert sheet.height == TILE and sheet.width >= 3 * TILE
    pixels = np.asarray(sheet.convert("RGB")).astype(int)
    third = (sheet.width + 6) // 3  # panels are TILE wide with 6 px gaps
    assert tuple(pixels[128, 10]) == (255, 0, 0), "the input"
    assert tuple(pixels[128, third + 10]) == (255, 255, 255) and tuple(pixels[128, third + 240]) == (0, 0, 0)
    assert tuple(pixels[128, 2 * third + 10]) == (255, 0, 0), "the subject is kept"
    background = {tuple(pixels[y, 2 * third + 200]) for y in range(100, 160)}
    assert background == {(255, 255, 255), (204, 204, 204)}, "the cut-away half shows the checkerboard"
