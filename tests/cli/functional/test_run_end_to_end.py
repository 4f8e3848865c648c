"""`segflow run` end to end: the real command, the local engine in a child process, the real handlers.

GIVEN an image, a short video and a truncated PNG (its header is whole, so it passes the header checks,
and the engine then refuses it as the service would: `InvalidImage.Content`),
WHEN `segflow run` processes them on the local engine,
THEN the image and the video end with results in the bucket layout the cloud produces, the truncated
file ends with one failure record carrying the service's code, previews are written, and the exit
status says something failed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

BUCKET = "segflow-local"


@pytest.fixture(scope="module")
def run_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    from PIL import Image
    from skimage import data

    from segflow_engine.samples import pan_frames, write_video

    inputs = tmp_path_factory.mktemp("inputs")
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(inputs / "astronaut.png")
    write_video(inputs / "walk.mp4", pan_frames(astronaut, 12, size=(160, 120)), 12)
    (inputs / "cut.png").write_bytes((inputs / "astronaut.png").read_bytes()[:40])
    out = tmp_path_factory.mktemp("out")
    command = [
        sys.executable, "-m", "segflow_cli", "run",
        str(inputs / "astronaut.png"), str(inputs / "walk.mp4"), str(inputs / "cut.png"),
        "--out", str(out), "--rule", "suffix=astronaut.png,action=SegmentBody", "--timeout", "300",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    return completed, out / "buckets" / BUCKET


def _manifest(bucket: Path, key: str, action: str) -> dict[str, object]:
    path = bucket / "segmented" / key / action / "manifest.json"
    assert path.is_file(), f"no manifest at {path}"
    manifest: dict[str, object] = json.loads(path.read_text(encoding="utf-8"))
    return manifest


def test_run_exits_non_zero_and_names_the_failure(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    completed, _ = run_result
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "2 done, 1 failed" in completed.stdout
    assert "InvalidImage.Content" in completed.stdout


def test_image_result_is_a_full_size_person_cutout(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from PIL import Image

    _, bucket = run_result
    manifest = _manifest(bucket, "incoming/astronaut.png", "SegmentBody")
    assert manifest["Action"] == "SegmentBody"
    assert manifest["Source"]["Key"] == "incoming/astronaut.png"  # type: ignore[index]
    cutout = Image.open(bucket / "segmented/incoming/astronaut.png/SegmentBody/cutout.png")
    assert cutout.mode == "RGBA" and cutout.size == (512, 512)
    alpha = np.asarray(cutout.getchannel("A"))
    assert alpha[100, 180] > 200, "the face must be kept"
    assert alpha[400, 260] > 200, "the orange suit must be kept"
    assert alpha[40, 480] < 30, "the background at the top right must be cut away"
    assert 0.3 < (alpha > 127).mean() < 0.8


def test_video_result_is_a_mask_video_with_every_frame(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    import av

    _, bucket = run_result
    manifest = _manifest(bucket, "incoming/walk.mp4", "SegmentVideoBody")
    assert manifest["JobId"]
    roles = {entry["Role"]: entry["Key"] for entry in manifest["Files"]}  # type: ignore[attr-defined]
    with av.open(str(bucket / roles["video"])) as container:
        frames = [frame.to_ndarray(format="gray") for frame in container.decode(video=0)]
    assert len(frames) == 12
    assert frames[0].shape == (120, 160)
    assert all(0.1 < (frame > 127).mean() < 0.95 for frame in frames), "each frame holds the person"
    assert not list((bucket / "segflow-jobs").glob("pending/*")), "no job is left pending"


def test_bad_input_leaves_one_failure_record(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, bucket = run_result
    record = json.loads((bucket / "segflow-failed/incoming/cut.png.json").read_text(encoding="utf-8"))
    assert record["Code"] == "InvalidImage.Content"
    assert record["Action"] == "SegmentCommonImage"
    assert "cannot be decoded (40 bytes)" in record["Message"]
    assert not (bucket / "segmented/incoming/cut.png").exists()


def test_previews_show_input_mask_and_cutout(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    from PIL import Image

    _, bucket = run_result
    previews = bucket.parent.parent / "previews"
    sheet = Image.open(previews / "astronaut.png.png")
    assert sheet.height == 256 and sheet.width > 3 * 256, "three panels side by side"
    strip = Image.open(previews / "walk.mp4.png")
    assert strip.height > 2 * 256, "several frames stacked"


def test_status_after_the_run_counts_the_done_and_the_failed_and_sees_the_collector(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """`segflow status` on the bucket the run left: its counts are the run's outcomes, and
    `--fail-on-failures` wakes a monitor for the one failure."""
    _, bucket = run_result
    command = [
        sys.executable, "-m", "segflow_cli", "status", BUCKET, "--bucket-dir", str(bucket.parent),
        "--json", "--fail-on-failures", "--stale-after", "3600",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 1, completed.stderr
    shape = json.loads(completed.stdout)
    assert (shape["done"], shape["problems"]) == (2, ["failed"])
    assert shape["failed"]["by_code"] == [
        {"code": "InvalidImage.Content", "action": "SegmentCommonImage", "count": 1}
    ]
    assert shape["faults"]["total"] == shape["pending"]["count"] == shape["submitting"]["count"] == 0
    assert shape["collector"]["last_run"] is not None and shape["collector"]["stale"] is False
    (failure,) = shape["recent_failures"]
    assert (failure["key"], failure["code"]) == ("incoming/cut.png", "InvalidImage.Content")
    assert "cannot be decoded (40 bytes)" in failure["message"]
