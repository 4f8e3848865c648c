"""The `segflow invoke` recipe of docs/engine.md works as printed (issue 18, "Claims").

GIVEN a `segflow engine` started with the key pair the recipe chooses (here in this process, stub models,
      on a free port instead of 8780) and the recipe's shell lines, read from docs/engine.md
WHEN the object is put where the recipe puts it, the recipe's variables are exported, and its
     `segflow invoke on_upload events/oss-put-image.json --bucket-dir …` runs as a child process
THEN it exits 0, the handler's answer says done, and the result is in the folder the recipe lists.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT, SOURCE_ROOTS
from tests.support.engine_server import StubActions, start_engine
from tests.support.services_harness import jpeg

SECTION = "## Running a handler yourself: `segflow invoke`"


def recipe_lines() -> list[str]:
    """The lines of the section's second shell block (terminal 2), comments left out."""
    text = (REPO_ROOT / "docs" / "engine.md").read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    blocks = section.split("```sh\n")[1:]
    terminal_2 = blocks[1].split("```")[0]
    return [line for line in terminal_2.splitlines() if line and not line.startswith("#")]


def test_the_recipe_runs_as_printed(tmp_path: Path) -> None:
    lines = recipe_lines()
    engine_line = (REPO_ROOT / "docs" / "engine.md").read_text(encoding="utf-8").split(SECTION)[1]
    keys = engine_line.split("SEGFLOW_ENGINE_ACCESS_KEYS=")[1].split()[0]
    key_id, secret = keys.split(":")
    with start_engine(actions=StubActions(), access_keys={key_id: secret}) as engine:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGFLOW_", "ALIBABA_CLOUD_"))}
        env["PYTHONPATH"] = os.pathsep.join([*map(str, SOURCE_ROOTS), str(REPO_ROOT)])
        work = tmp_path / "checkout"
        (work / "segflow-out/samples/faces").mkdir(parents=True)
        (work / "segflow-out/samples/faces/astronaut-face.jpg").write_bytes(jpeg((320, 240)))  # make demo's
        shutil.copytree(REPO_ROOT / "events", work / "events")
        invoked = None
        for line in lines:
            words = shlex.split(line.replace("http://127.0.0.1:8780", engine.base_url))
            if words[0] == "export":
                env.update(word.split("=", 1) for word in words[1:])
            elif words[0] == "unset":
                env.pop(words[1], None)
            elif words[0] == ".venv/bin/segflow":
                invoked = subprocess.run(
                    [sys.executable, "-m", "segflow_cli", *words[1:]],
                    cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
            else:  # mkdir, cp, ls: as the shell runs them
                done = subprocess.run(
                    words, cwd=work, capture_output=True, text=True, timeout=30, check=False
                )
                assert done.returncode == 0, f"{line}: {done.stderr}"
    assert invoked is not None, "the recipe runs segflow invoke"
    assert invoked.returncode == 0, invoked.stdout + invoked.stderr
    assert json.loads(invoked.stdout)["done"] == 1
    result = (
        work / "segflow-out/invoke/segflow-demo/segmented/incoming/photos/person-001.jpg/SegmentCommonImage"
    )
    assert (result / "manifest.json").is_file()
