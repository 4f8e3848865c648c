"""`segflow run` again after a video file changed: the run waits for the new version's job.

Found running `make demo` twice on a fresh clone: the second run re-uploaded a sample clip whose bytes had
changed, said "done" at once because the earlier version's manifest was under the output prefix, and
stopped its engine with the new version's job still queued. The next run's collector then polled a job
no engine knew and recorded a failure for a file the previous run had called done. What a user expects
(README, "What make demo does"; shared/ARCHITECTURE.md, "Versions"): each run reports the outcome of the
file as it is now.

GIVEN a clip run through `segflow run` (the real command, the local engine in a child process)
WHEN the clip is changed and run again, then run a third time unchanged
THEN the second run waits for the new version's job and reports it done, the stored manifest names the
     new version's ETag, and the third run finds it done, with no failure record anywhere.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

BUCKET = "segflow-local"
KEY = "incoming/clip.mp4"


def segflow_run(out: Path, clip: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "segflow_cli", "run", str(clip), "--out", str(out), "--no-preview"]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


def write_clip(path: Path, frames: int) -> None:
    from skimage import data

    from segflow_engine.samples import pan_frames, write_video

    write_video(path, pan_frames(data.astronaut(), frames), 12)


def test_a_changed_clip_is_reported_with_its_new_version(tmp_path: Path) -> None:
    clip, out = tmp_path / "clip.mp4", tmp_path / "out"
    write_clip(clip, 12)
    first = segflow_run(out, clip)
    assert first.returncode == 0, first.stdout + first.stderr
    bucket = out / "buckets" / BUCKET
    manifest = bucket / "segmented" / KEY / "SegmentVideoBody" / "manifest.json"
    old_etag = json.loads(manifest.read_text())["Source"]["ETag"]

    write_clip(clip, 18)  # the user's re-export: same name, other bytes
    second = segflow_run(out, clip)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 done, 0 failed" in second.stdout, second.stdout
    new_etag = json.loads(manifest.read_text())["Source"]["ETag"]
    assert new_etag != old_etag, "the stored result is still the earlier version's"

    third = segflow_run(out, clip)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "1 done, 0 failed" in third.stdout, third.stdout
    assert json.loads(manifest.read_text())["Source"]["ETag"] == new_etag
    failures = sorted(p.relative_to(bucket).as_posix() for p in (bucket / "segflow-failed").rglob("*.json"))
    assert failures == [], failures
