"""RefineMask: a coarse mask of a known composite comes back closer to the truth (alpha matting)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from segflow.errors import InputValidationError
from segflow_engine import actions
from tests.support import composites as c

pytestmark = pytest.mark.engine


def coarse_mask_of(truth: np.ndarray) -> np.ndarray:
    """What a low-resolution model gives: the truth grown 8 px, pooled to 16×16 and scaled back up."""
    grown = cv2.dilate(truth.astype(np.uint8) * 255, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (17, 17)))
    small = cv2.resize(grown, (16, 16), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)


@pytest.mark.parametrize(("background", "minimum"), [("gravel", 0.97), ("coffee", 0.94)])  # 0.99 / 0.97
def test_refine_mask_moves_a_coarse_mask_towards_the_truth(background, minimum):
    comp = c.person_composite(background)
    coarse = coarse_mask_of(comp.truth)
    before = c.iou(coarse, comp.truth)
    output = actions.run_image_action(
        "RefineMask", {}, c.png_bytes(comp.image), {"MaskImageURL": c.png_bytes(coarse)}
    )
    assert output.image is None
    (element,) = output.elements
    refined = c.decode(element.image)
    assert refined.mode == "L" and refined.size == (512, 512)
    after = c.iou(np.asarray(refined), comp.truth)
    assert after >= minimum and after > before + 0.04, (before, after)


def test_refine_mask_reads_the_alpha_of_an_rgba_mask_and_rescales_it():
    comp = c.person_composite("gravel")
    coarse = coarse_mask_of(comp.truth)
    rgba = np.zeros((256, 256, 4), dtype=np.uint8)
    rgba[..., 3] = cv2.resize(coarse, (256, 256), interpolation=cv2.INTER_AREA)
    import io

    buffer = io.BytesIO()
    Image.fromarray(rgba, mode="RGBA").save(buffer, format="PNG")
    output = actions.run_image_action("RefineMask", {}, comp.image, {"MaskImageURL": buffer.getvalue()})
    assert c.iou(c.alpha_of(output.elements[0].image), comp.truth) >= 0.95


def test_refine_mask_without_the_coarse_mask_is_a_missing_parameter():
    with pytest.raises(InputValidationError) as info:
        actions.run_image_action("RefineMask", {}, np.zeros((64, 64, 3), np.uint8), {})
    assert info.value.code == "MissingParameter"


def test_the_warm_up_runs_a_matting_solve_so_the_first_call_does_not_compile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pymatting's kernels are numba functions compiled on their first call (15-45 s on 2 cores): the
    engine's warm-up and `segflow models install` solve a tiny trimap, so a client's first RefineMask is
    not the one that waits past its 30 s read timeout."""
    import pymatting

    solved: list[tuple[int, ...]] = []
    real = pymatting.estimate_alpha_cf

    def counting(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        solved.append(image.shape)
        result: np.ndarray = real(image, trimap)
        return result

    monkeypatch.setattr(pymatting, "estimate_alpha_cf", counting)
    timings = actions.warm_up(("matting",))
    assert list(timings) == ["matting"] and len(solved) == 1
    assert "matting" in actions.served_warm_up()  # served by default: RefineMask
