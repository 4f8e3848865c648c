"""videoseg actions: mask videos with the source's frame count and size, per-frame IoU against the pasted
truth, and memory that does not grow with the video's length."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from segflow.errors import InputValidationError, UnknownActionError
from segflow_engine import actions
from segflow_engine.segmenters.video import cut_below, smooth
from tests.support import composites as c

pytestmark = pytest.mark.engine

FRAMES = 12


@pytest.fixture(scope="module")
def person_clip(tmp_path_factory) -> tuple[Path, list[c.Composite]]:
    frames = list(c.person_clip_frames(FRAMES))
    path = tmp_path_factory.mktemp("video") / "person.mp4"
    assert c.write_video(path, (f.image for f in frames)) == FRAMES
    return path, frames


@pytest.fixture(scope="module")
def green_clip(tmp_path_factory) -> tuple[Path, list[c.Composite]]:
    frames = [c.green_screen_frame(dx=6 * i - 36, seed=i) for i in range(FRAMES)]
    path = tmp_path_factory.mktemp("video") / "green.mp4"
    c.write_video(path, (f.image for f in frames))
    return path, frames


@pytest.mark.parametrize(
    ("action", "minimum"),
    # Measured: min 0.967, mean 0.978 for both (the person's hips are out of view, so half body = body).
    [("SegmentVideoBody", 0.94), ("SegmentHalfBody", 0.94)],
)
def test_person_video_masks_follow_the_moving_person(person_clip, tmp_path, action, minimum):
    src, frames = person_clip
    dst = tmp_path / "mask.mp4"
    result = actions.run_video_action(action, {}, src, dst)
    assert (result.frames, result.width, result.height) == (FRAMES, 320, 240)
    masks = list(c.read_video_gray(dst))
    assert len(masks) == FRAMES and masks[0].shape == (240, 320)
    scores = [c.iou(mask, frame.truth) for mask, frame in zip(masks, frames, strict=True)]
    assert min(scores) >= minimum, [round(s, 3) for s in scores]
    # The mask moves with the person (4 px a frame): its centre of mass shifts right.
    first, last = (np.nonzero(m >= 128)[1].mean() for m in (masks[0], masks[-1]))
    assert 30 < last - first < 60


def test_green_screen_video_keys_every_frame(green_clip, tmp_path):
    src, frames = green_clip
    result = actions.run_video_action("SegmentGreenScreenVideo", {}, src, tmp_path / "mask.mp4")
    masks = list(c.read_video_gray(result.path))
    assert len(masks) == FRAMES
    scores = [c.iou(mask, frame.truth) for mask, frame in zip(masks, frames, strict=True)]
    assert min(scores) >= 0.97, [round(s, 4) for s in scores]  # measured 0.99 after H.264 twice


def test_odd_sized_video_keeps_its_size(tmp_path):
    frames = [c.green_screen_frame(size=(161, 121), seed=i).image for i in range(4)]
    src = tmp_path / "odd.mp4"
    c.write_video(src, iter(frames), codec="mpeg4")
    result = actions.run_video_action("SegmentGreenScreenVideo", {}, src, tmp_path / "mask.mp4")
    assert (result.frames, result.width, result.height) == (4, 161, 121)
    assert next(c.read_video_gray(result.path)).shape == (121, 161)


def _peak_memory(src: Path, dst: Path) -> int:
    tracemalloc.start()
    try:
        actions.run_video_action("SegmentGreenScreenVideo", {}, src, dst)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_in_video_length(tmp_path):
    def clip(count: int) -> Path:
        path = tmp_path / f"clip{count}.mp4"
        c.write_video(path, (c.green_screen_frame(dx=i % 40 - 20, seed=i).image for i in range(count)))
        return path

    short, long = clip(10), clip(80)
    short_peak = _peak_memory(short, tmp_path / "s.mp4")
    long_peak = _peak_memory(long, tmp_path / "l.mp4")
    # Eight times the frames, (almost) the same peak: frames are never accumulated (70 frames of RGB + mask
    # would be 21 MB).
    assert long_peak < short_peak * 1.3 + 2_000_000, (short_peak, long_peak)


def test_undecodable_video_and_unknown_action_are_refused(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    with pytest.raises(InputValidationError) as info:
        actions.run_video_action("SegmentVideoBody", {}, bad, tmp_path / "out.mp4")
    assert info.value.code.startswith("InvalidFile.")
    with pytest.raises(UnknownActionError):
        actions.run_video_action("SegmentSky", {}, bad, tmp_path / "out.mp4")


def test_half_body_cut_and_smoothing_rules():
    full = np.ones((100, 10), dtype=np.float32)
    cut = cut_below(full, 50.0)
    assert cut[:48].min() == 1.0 and cut[53:].max() == 0.0
    assert cut_below(full, None) is full
    previous, current = np.zeros((2, 2), np.float32), np.array([[0.2, 1.0], [0.0, 0.3]], np.float32)
    blended = smooth(previous, current)
    assert blended[0, 1] == 1.0  # a big jump is motion: taken as is, no ghosting
    assert 0 < blended[0, 0] < 0.2 and 0 < blended[1, 1] < 0.3  # small changes are averaged
