"""Colour rules: green-screen chroma keying (with spill) and stamp ink, against drawn truths."""

from __future__ import annotations

import numpy as np
import pytest

from segflow_engine import actions
from segflow_engine.segmenters import get_segmenter
from segflow_engine.segmenters.color import despill
from tests.support import composites as c

pytestmark = pytest.mark.engine


@pytest.mark.parametrize("shift", [-60, 0, 60])
def test_chroma_key_recovers_the_person_in_front_of_an_uneven_green_screen(shift):
    frame = c.green_screen_frame(dx=shift, seed=shift + 100)
    score = c.iou(get_segmenter("greenscreen").segment(frame.image).mask, frame.truth)
    assert score >= 0.98, f"IoU {score:.4f}"  # measured 0.9998


def test_despill_removes_the_green_cast_on_the_edges():
    frame = c.green_screen_frame()
    image = frame.image.astype(int)
    edge = frame.truth & ~np.roll(frame.truth, 3, axis=1)  # the person's left rim, where the spill was drawn
    excess_before = (image[..., 1] - (image[..., 0] + image[..., 2]) / 2)[edge].mean()
    cleaned = despill(frame.image).astype(int)
    excess_after = (cleaned[..., 1] - (cleaned[..., 0] + cleaned[..., 2]) / 2)[edge].mean()
    assert excess_before > 10 and excess_after <= 0.5


def test_picwish_stamp_masks_the_red_seal_over_printed_text():
    page = c.stamp_image(400)
    output = actions.run_image_action("PicWish", {"type": "stamp", "output_type": "3"}, page.image, {})
    score = c.iou(c.alpha_of(output.mask), page.truth)
    assert score >= 0.95, f"IoU {score:.4f}"  # measured 0.978


def test_picwish_stamp_cutout_keeps_the_ink_and_drops_the_text():
    page = c.stamp_image(400)
    output = actions.run_image_action("PicWish", {"type": "stamp"}, page.image, {})
    rgba = np.asarray(c.decode(output.image))
    opaque = rgba[..., 3] >= 128
    assert rgba[opaque][:, 0].mean() > rgba[opaque][:, 1].mean() + 40  # red ink
    text_only = (page.image.max(axis=2) < 80) & ~page.truth  # black print outside the seal
    assert (opaque & text_only).sum() < 0.01 * text_only.sum()


def test_plain_paper_has_no_stamp():
    paper = np.ascontiguousarray(c.background("paper", 300, 300))
    assert (get_segmenter("stamp").segment(paper).mask >= 128).mean() == 0
