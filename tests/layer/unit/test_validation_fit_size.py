"""fit_size: the largest same-aspect size an action accepts (the oversize `fit` policy)."""

from __future__ import annotations

import random

import pytest

from segflow.catalogue import ACTIONS, get_action
from segflow.validation import LimitViolationError, fit_size, resolution_problems


@pytest.mark.parametrize(
    ("action", "size", "expected"),
    [
        ("SegmentCommonImage", (1279, 1279), None),  # < 1280×1280: already fine
        ("SegmentCommonImage", (1280, 720), (1279, 719)),  # < 1280×1280 is exclusive
        ("SegmentBody", (4000, 3000), (1279, 959)),
        ("SegmentCommodity", (3000, 4000), (959, 1279)),
        ("SegmentFace", (4000, 3000), (2667, 2000)),  # min side ≤ 2000
        ("SegmentHair", (4000, 2000), (3999, 2000)),  # w×h < 8,000,000
        ("SegmentHead", (3000, 3000), (1999, 1999)),  # < 2000×2000 (002)
        ("ParseFace", (4096, 2048), (2048, 1024)),  # ≤ 2048×2048, aspect 2.0 kept
        ("SegmentFurniture", (4000, 4000), (1998, 1998)),  # < 1999×1999
        ("SegmentVehicle", (2000, 2000), (1999, 1999)),  # < 2000×2000
        ("RefineMask", (2000, 1000), (1999, 1000)),
        ("PicWish", (8192, 4096), (4096, 2048)),  # ≤ 4096×4096
        ("SegmentHalfBody", (3840, 2160), (1920, 1080)),  # ≤ 1080p
        ("SegmentHalfBody", (2160, 3840), (1080, 1920)),  # ≤ 1080p, portrait
        ("SegmentGreenScreenVideo", (4000, 3000), (2000, 1500)),  # ≤ 2000×2000
        ("SegmentVideoBody", (7680, 4320), None),  # no resolution limit
    ],
)
def test_fit_size_shrinks_to_the_largest_accepted_size(
    action: str, size: tuple[int, int], expected: tuple[int, int] | None
) -> None:
    target = fit_size(get_action(action), *size)
    assert target == expected
    if target is not None:
        assert not resolution_problems(action, get_action(action).limits, *target)


@pytest.mark.parametrize(
    ("action", "size", "limit"),
    [
        ("SegmentVehicle", (20, 20), "> 32×32"),
        ("ParseFace", (300, 100), "aspect 0.5–2.0"),
        ("SegmentFace", (1700, 100), "long/short ≤ 16"),
        ("SegmentFace", (20000, 100), "long/short ≤ 16 and max side ≤ 8000"),
        ("SegmentHalfBody", (90, 2000), "> 100×100"),
    ],
)
def test_fit_size_refuses_what_no_shrinking_can_fix(action: str, size: tuple[int, int], limit: str) -> None:
    with pytest.raises(LimitViolationError) as err:
        fit_size(get_action(action), *size)
    assert err.value.kind == "resolution"
    assert "no scaled copy" in err.value.message, limit


def test_fit_size_results_are_accepted_and_keep_the_aspect_for_random_sizes() -> None:
    rng = random.Random(20260322)
    actions = [a for a in ACTIONS.values() if a.limits.checks_resolution]
    checked = 0
    for _ in range(400):
        action = rng.choice(actions)
        width, height = rng.randint(1, 12000), rng.randint(1, 12000)
        try:
            target = fit_size(action, width, height)
        except LimitViolationError:
            continue
        if target is None:
            assert not resolution_problems(action.name, action.limits, width, height)
            continue
        checked += 1
        tw, th = target
        assert not resolution_problems(action.name, action.limits, tw, th)
        assert tw <= width and th <= height
        assert abs(tw / th - width / height) <= max(1 / th, 1 / tw) * (width / height + 1) + 1e-9
        # one pixel more on the long side would not be accepted (or would reach the original size)
        if width >= height:
            bigger = (tw + 1, max(1, round(height * (tw + 1) / width)))
        else:
            bigger = (max(1, round(width * (th + 1) / height)), th + 1)
        assert (
            resolution_problems(action.name, action.limits, *bigger)
            or bigger[0] > width
            or bigger[1] > height
        )
    assert checked > 50
