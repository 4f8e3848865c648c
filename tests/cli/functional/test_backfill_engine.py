"""`segflow backfill` and `segflow redrive` end to end with the local engine: the real commands in child
processes, `--engine local` starting `segflow engine` (real models) as `segflow run` does, a local-directory
bucket holding files from before the deployment.

GIVEN a photo, a clip and a portrait in a bucket, and a routing rule naming an action that does not exist,
WHEN `segflow backfill --local --engine local` runs,
THEN the photo and the clip end with their results and the portrait with one failure record
(UnsupportedOperation); and once the rule is fixed, `segflow redrive --local --engine local` ends the
portrait with its result and no failure record.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SOURCE_ROOTS
from tests.support.ops import BUCKET, Bucket

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def segflow(bucket: Bucket, *args: str, rules: list[dict[str, str]]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGFLOW_", "ALIBABA_CLOUD_"))}
    env["PYTHONPATH"] = os.pathsep.join(map(str, (*SOURCE_ROOTS, REPO_ROOT)))
    env["SEGFLOW_RULES"] = json.dumps(rules)
    command = [sys.executable, "-m", "segflow_cli", *args, BUCKET, "--bucket-dir", str(bucket.root)]
    command += ["--local", "--engine", "local", "--timeout", "300"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, check=False)


def test_backfill_then_redrive_after_fixing_a_rule(tmp_path: Path) -> None:
    from PIL import Image
    from skimage import data

    from segflow_engine.samples import pan_frames, write_video

    (tmp_path / BUCKET).mkdir()
    bucket = Bucket(tmp_path)
    astronaut = data.astronaut()
    Image.fromarray(astronaut).save(tmp_path / "astronaut.png")
    Image.fromarray(data.coffee()).resize((400, 300)).save(tmp_path / "coffee.jpg")
    write_video(tmp_path / "walk.mp4", pan_frames(astronaut, 12, size=(160, 120)), 12)
    bucket.put("incoming/portraits/astronaut.png", (tmp_path / "astronaut.png").read_bytes())
    bucket.put("incoming/shop/coffee.jpg", (tmp_path / "coffee.jpg").read_bytes())
    bucket.put("incoming/clips/walk.mp4", (tmp_path / "walk.mp4").read_bytes())

    broken = [{"prefix": "incoming/portraits/", "action": "SegmentHeads"}]
    first = segflow(bucket, "backfill", rules=broken)

    assert first.returncode == 1, first.stdout + first.stderr
    assert bucket.manifests() == {
        "incoming/shop/coffee.jpg": "SegmentCommonImage",
        "incoming/clips/walk.mp4": "SegmentVideoBody",
    }
    assert {k: d["Code"] for k, d in bucket.failures().items()} == {
        "incoming/portraits/astronaut.png": "UnsupportedOperation"
    }

    fixed = [{"prefix": "incoming/portraits/", "action": "SegmentHead"}]
    second = segflow(bucket, "redrive", rules=fixed)

    assert second.returncode == 0, second.stdout + second.stderr
    assert bucket.manifests()["incoming/portraits/astronaut.png"] == "SegmentHead"
    assert bucket.failures() == {}
    cutouts = bucket.keys("segmented/incoming/portraits/astronaut.png/SegmentHead/")
    assert any(key.endswith(".png") for key in cutouts)
