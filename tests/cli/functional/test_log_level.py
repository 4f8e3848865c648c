"""A log level a user can set for the command: `SEGFLOW_LOG_LEVEL`, and `-v` (issue 15 §4).

GIVEN a bucket folder with a photo and the fake imageseg on loopback (the keys and an AppCode in the
      environment, as a user sets them)
WHEN `segflow invoke on_upload` runs as a user runs it (a child process, its real stderr) with no level,
     with SEGFLOW_LOG_LEVEL=WARNING, or with -v; and `segflow status` with a level that does not exist
THEN the console shows the function's INFO lines by default, only warnings at WARNING, segflow's DEBUG
     lines with -v, never a secret at any level; a bad level is one line naming the variable, exit 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EVENTS_DIR, REPO_ROOT, SOURCE_ROOTS
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi
from tests.support.services_harness import FakeVision, ResultServer, jpeg

BUCKET = "segflow-demo"  # the bucket of events/oss-put-image.json
KEY = "incoming/photos/person-001.jpg"
APPCODE = "appcode-0f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
def user(tmp_path: Path, api: FakeApi, results: ResultServer) -> dict[str, str]:
    """The environment of a user pointing segflow at the (fake) service; the bucket folder is ready."""
    FakeVision(api, results)
    (tmp_path / BUCKET / "incoming/photos").mkdir(parents=True)
    (tmp_path / BUCKET / KEY).write_bytes(jpeg((64, 48)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEGFLOW_", "ALIBABA_CLOUD_", "FC_"))}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, SOURCE_ROOTS), str(REPO_ROOT)])
    env.update(
        SEGFLOW_IMAGESEG_ENDPOINT=api.url,
        SEGFLOW_VIDEOSEG_ENDPOINT=api.url,
        SEGFLOW_PICWISH_APPCODE=APPCODE,
        ALIBABA_CLOUD_ACCESS_KEY_ID=TEST_CREDENTIALS.access_key_id,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=TEST_CREDENTIALS.access_key_secret,
        SEGFLOW_LOCAL_BUCKET_DIR=str(tmp_path),
    )
    return env


def segflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "segflow_cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def invoke(env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    done = segflow(env, "invoke", "on_upload", str(EVENTS_DIR / "oss-put-image.json"), *extra)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["records"] == 1
    return done


def test_invoke_shows_the_functions_info_lines_by_default_and_less_or_more_on_request(
    user: dict[str, str],
) -> None:
    verbose = invoke(user, "-v").stderr  # the first delivery: the call is made
    assert "DEBUG segflow." in verbose and "INFO segflow.services" in verbose

    default = invoke(user).stderr  # a duplicate now: its INFO line, no call
    assert 'INFO segflow.services {"bucket":"segflow-demo"' in default and "DEBUG" not in default

    quiet = invoke({**user, "SEGFLOW_LOG_LEVEL": "WARNING"}).stderr
    assert "INFO" not in quiet and "DEBUG" not in quiet
    secrets = (TEST_CREDENTIALS.access_key_secret, APPCODE)
    for stderr in (default, quiet, verbose):
        assert not [s for s in secrets if s in stderr], "a secret reached the console"


def test_an_unknown_level_is_one_line_naming_the_variable(user: dict[str, str]) -> None:
    done = segflow({**user, "SEGFLOW_LOG_LEVEL": "loud"}, "status", BUCKET)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "segflow status: SEGFLOW_LOG_LEVEL='loud' must be one of debug, info, warning, error\n"
    )
