"""`segflow run` with inputs it cannot read, then again with a rule's parameters changed (issue 18, bugs
3 and 5): the real command, the local engine in a child process, the real handlers.

GIVEN a photo, a photo without read permission, a FIFO and a broken symbolic link
WHEN `segflow run` is given all four (as a user without root's override of file permissions)
THEN each unreadable input is one line naming it and why, the photo is still processed, and the exit
     status is 2;
WHEN the same photo is run again with the rule's parameters changed (SegmentHead, then ReturnForm=mask)
THEN the new rule runs: the result is the new parameters' (not "done 0.0s" with the old files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.engine, pytest.mark.slow]

BUCKET = "segflow-local"
HEAD = "suffix=face.png,action=SegmentHead"


def as_a_user(command: list[str]) -> list[str]:
    """Root reads files whatever their permissions; drop that override (CAP_DAC_*) as a user lacks it."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: an unreadable file cannot be made")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", *command]


def segflow_run(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = as_a_user(
        [sys.executable, "-m", "segflow_cli", "run", *args, "--out", str(out), "--no-preview"]
    )
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[subprocess.CompletedProcess[str]], Path]:
    from PIL import Image
    from skimage import data

    inputs = tmp_path_factory.mktemp("inputs")
    Image.fromarray(data.astronaut()).save(inputs / "face.png")
    shutil.copy(inputs / "face.png", inputs / "locked.png")
    (inputs / "locked.png").chmod(0)
    os.mkfifo(inputs / "pipe.png")
    (inputs / "gone.png").symlink_to(inputs / "deleted.png")
    out = tmp_path_factory.mktemp("out")
    given = [str(inputs / name) for name in ("face.png", "locked.png", "pipe.png", "gone.png")]
    first = segflow_run(out, *given, "--rule", HEAD)
    again = segflow_run(out, str(inputs / "face.png"), "--rule", HEAD)  # done under this rule (either way)
    assert again.returncode == 0, again.stdout + again.stderr
    second = segflow_run(out, str(inputs / "face.png"), "--rule", HEAD + ",ReturnForm=mask")
    return [first, second], out / "buckets" / BUCKET


def test_each_unreadable_input_is_one_line_and_the_others_are_processed(
    runs: tuple[list[subprocess.CompletedProcess[str]], Path],
) -> None:
    (first, _), bucket = runs
    assert first.returncode == 2, first.stdout + first.stderr
    lines = [line for line in first.stderr.splitlines() if line.startswith("segflow run: cannot read")]
    assert len(lines) == 3, first.stderr
    reasons = {Path(line.split()[4].rstrip(":")).name: line for line in lines}
    assert "permission denied" in reasons["locked.png"]
    assert "not a regular file (a FIFO)" in reasons["pipe.png"]
    assert "a broken symbolic link" in reasons["gone.png"]
    assert "Traceback" not in first.stderr
    assert "1 done, 0 failed" in first.stdout
    assert (bucket / "segmented/incoming/face.png/SegmentHead/manifest.json").is_file()


def test_a_rerun_with_other_parameters_runs_the_new_rule(
    runs: tuple[list[subprocess.CompletedProcess[str]], Path],
) -> None:
    (_, second), bucket = runs
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 done, 0 failed" in second.stdout
    manifest = json.loads((bucket / "segmented/incoming/face.png/SegmentHead/manifest.json").read_text())
    assert manifest["Params"] == {"ReturnForm": "mask"}
    roles = {entry["Role"] for entry in manifest["Files"]}
    assert roles and roles <= {"mask", "element"}, manifest["Files"]
