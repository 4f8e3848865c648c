"""`segflow invoke` (local mode) says in one line what is wrong, and a malformed event exits non-zero
(issue 18, "Claims" and "Smaller").

GIVEN a bucket directory and the engine's endpoints in the environment
WHEN the AccessKey is missing, the event is malformed, or the handler raises one of segflow's errors
THEN one line on stderr says so (no traceback, nothing written to the bucket when nothing could run), and
     the exit status is non-zero — 2 before anything ran, 1 when the handler ran and refused the event
     (it still returns normally, as FC needs: a retry cannot fix a malformed event).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from segflow_cli.main import main
from tests.conftest import EVENTS_DIR

BUCKET = "segflow-demo"  # the bucket of events/oss-put-image.json
ENGINE = "http://127.0.0.1:8780"  # never called: each case ends before a call


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import os

    for name in list(os.environ):
        if name.startswith(("SEGFLOW_", "ALIBABA_CLOUD_", "FC_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SEGFLOW_IMAGESEG_ENDPOINT", ENGINE)
    monkeypatch.setenv("SEGFLOW_VIDEOSEG_ENDPOINT", ENGINE)
    (tmp_path / BUCKET / "incoming/photos").mkdir(parents=True)
    (tmp_path / BUCKET / "incoming/photos/person-001.jpg").write_bytes(b"\xff\xd8\xff\xe0 not much more")
    return tmp_path


def with_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAIlocal0123")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "local-secret-value")


def test_endpoints_without_keys_are_one_line_before_anything_runs(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p for p in root.rglob("*"))
    status = main(["invoke", "on_upload", str(EVENTS_DIR / "oss-put-image.json"), "--bucket-dir", str(root)])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and "ALIBABA_CLOUD_ACCESS_KEY_ID" in err and "development key pair" in err
    assert "Traceback" not in err
    assert sorted(p for p in root.rglob("*")) == before  # no record, no fault record


@pytest.mark.parametrize(
    ("function", "payload"),
    [
        ("on_upload", b"this is not JSON"),
        ("on_upload", b'{"events": [{"foo": 1}]}'),
        ("collect_jobs", b"this is not JSON"),
    ],
    ids=["on_upload-not-json", "on_upload-no-eventName", "collect_jobs-not-json"],
)
def test_a_malformed_event_exits_non_zero(
    function: str,
    payload: bytes,
    root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with_keys(monkeypatch)
    event = tmp_path / "event.json"
    event.write_bytes(payload)
    status = main(["invoke", function, str(event), "--bucket-dir", str(root)])
    out, err = capsys.readouterr()
    assert status == 1, err
    json.loads(out)  # the handler's answer, as FC would return it
    assert "segflow invoke: the event" in err and "Traceback" not in err


def test_a_segflow_error_the_handler_raises_is_one_line_and_a_bug_keeps_its_traceback(
    root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_keys(monkeypatch)
    handler = tmp_path / "fn" / "on_upload" / "index.py"
    handler.parent.mkdir(parents=True)
    handler.write_text(
        "from segflow.errors import ConfigError\n"
        "def handler(event, context):\n"
        "    raise ConfigError('SEGFLOW_RULES names no action')\n"
    )
    argv = ["invoke", "on_upload", str(EVENTS_DIR / "oss-put-image.json"), "--bucket-dir", str(root)]
    status = main([*argv, "--functions-dir", str(tmp_path / "fn")])
    out, err = capsys.readouterr()
    assert status == 1 and json.loads(out)["errorType"] == "ConfigError"
    assert err.count("\n") == 1 and "SEGFLOW_RULES names no action" in err

    status = main([*argv, "--functions-dir", str(tmp_path / "fn"), "--verbose"])
    assert status == 1 and "Traceback" in capsys.readouterr().err
