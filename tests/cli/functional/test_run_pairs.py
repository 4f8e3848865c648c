"""RefineMask pairs through `segflow run` and the local engine, end to end.

GIVEN two images with their coarse masks in a folder — `cat.jpg` sorts before `cat.mask.png` (the image
arrives first), `photo.mask.png` before `photo.png` (the mask arrives first) — and a rule that pairs them,
WHEN `segflow run` uploads the folder and the local engine refines the masks (pymatting on a trimap),
THEN each pair makes one RefineMask call whose result, a mask of the image's size, is stored under the
image's key, and every file of the run is done.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

BUCKET = "segflow-local"


def _coarse_mask(width: int, height: int, box: tuple[int, int, int, int]) -> bytes:
    from PIL import Image

    mask = Image.new("RGB", (width, height), (0, 0, 0))
    mask.paste((255, 255, 255), box)
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def run_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    from PIL import Image
    from skimage import data

    folder = tmp_path_factory.mktemp("inputs")
    pairs = folder / "pairs"
    pairs.mkdir()
    astronaut = Image.fromarray(data.astronaut()).resize((256, 256))
    astronaut.convert("RGB").save(pairs / "cat.jpg", quality=90)
    (pairs / "cat.mask.png").write_bytes(_coarse_mask(256, 256, (40, 20, 220, 256)))
    coffee = Image.fromarray(data.coffee()).resize((300, 200))
    coffee.save(pairs / "photo.png")
    (pairs / "photo.mask.png").write_bytes(_coarse_mask(300, 200, (60, 20, 240, 180)))
    out = tmp_path_factory.mktemp("out")
    command = [
        sys.executable, "-m", "segflow_cli", "run", str(folder), "--out", str(out), "--timeout", "300",
        "--rule", "prefix=pairs/,action=RefineMask,pair={stem}.mask.png", "--no-preview",
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    return completed, out / "buckets" / BUCKET


@pytest.mark.parametrize(("image", "size"), [("cat.jpg", (256, 256)), ("photo.png", (300, 200))])
def test_each_pair_is_refined_once_under_its_image(
    run_result: tuple[subprocess.CompletedProcess[str], Path], image: str, size: tuple[int, int]
) -> None:
    from PIL import Image

    completed, bucket = run_result
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = bucket / "segmented" / "incoming" / "pairs" / image / "RefineMask"
    manifest = json.loads((result / "manifest.json").read_text(encoding="utf-8"))
    stem = image.rsplit(".", 1)[0]
    assert manifest["Source"]["Key"] == f"incoming/pairs/{image}"
    etag_image, etag_mask = manifest["Source"]["ETag"].split("+")
    assert etag_image and etag_mask
    (element,) = [f for f in manifest["Files"] if f["Role"] == "element"]
    with Image.open(bucket / element["Key"]) as refined:
        mask = np.asarray(refined.convert("L"))
    assert mask.shape == (size[1], size[0])
    assert 0.05 < (mask > 127).mean() < 0.95  # something kept, something cut
    assert not (bucket / "segmented" / "incoming" / "pairs" / f"{stem}.mask.png").exists()


def test_the_run_reports_every_file_done_and_nothing_waiting(
    run_result: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    completed, bucket = run_result
    assert "4 done, 0 failed" in completed.stdout
    assert not list((bucket / "segflow-jobs").glob("pairs/*")), "no half left waiting"
    assert not (bucket / "segflow-failed").exists()
