"""`--json` means one JSON document on stdout on every way a command ends (issue 18, bug 4).

GIVEN a local-directory bucket and the fake vision service (as a user's environment would point at it)
WHEN `segflow status`, `segflow backfill` or `segflow redrive` runs with `--json` and ends any way it
     can: its result, a dry run, nothing to do, a refusal, a usage error, Ctrl-C
THEN stdout is exactly one JSON document (a result, or `{"command", "error": {"code", "message"},
     "exit_status"}` with the exit status the command returns), and the human line of a refusal is on stderr.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from segflow_cli import backfill_run
from tests.support.fake_api import FakeApi
from tests.support.ops import BUCKET, Bucket, local_bucket, run_cli
from tests.support.services_harness import FakeVision, ResultServer


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> Bucket:
    return local_bucket(tmp_path, monkeypatch, api)


@pytest.fixture
def vision(api: FakeApi, results: ResultServer) -> FakeVision:
    return FakeVision(api, results)


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any], str]:
    """The command with `--json`: (exit status, the one JSON document on stdout, stderr)."""
    try:
        status, out, err = run_cli(capsys, *args, "--json")
    except SystemExit as exc:  # argparse's usage errors exit from inside main
        status = int(exc.code or 0)
        out, err = capsys.readouterr()
    try:
        document: dict[str, Any] = json.loads(out)
    except ValueError:
        pytest.fail(f"stdout is not one JSON document:\n{out}")
    return status, document, err


def refused(document: dict[str, Any], status: int, code: str) -> None:
    assert document["error"]["code"] == code and document["error"]["message"], document
    assert document["exit_status"] == status


def local_args(bucket: Bucket, command: str, *extra: str) -> list[str]:
    return [command, BUCKET, "--bucket-dir", str(bucket.root), *extra]


# -- status ---------------------------------------------------------------------------------------------


def test_status_prints_its_document(bucket: Bucket, capsys: pytest.CaptureFixture[str]) -> None:
    status, document, _ = run_json(capsys, *local_args(bucket, "status"))
    assert status == 0 and document["schema"] == 1 and document["bucket"] == BUCKET


def test_status_of_a_missing_bucket_is_a_json_error(
    bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, err = run_json(capsys, "status", "no-such-bucket", "--bucket-dir", str(bucket.root))
    assert status == 2 and "does not exist" in err
    refused(document, 2, "NoSuchBucket")


def test_a_usage_error_is_a_json_error(bucket: Bucket, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["status", BUCKET, "--failures", "-1"], ["backfill", BUCKET, "--limit", "0"]):
        status, document, err = run_json(capsys, *command)
        assert status == 2 and "usage:" in err
        refused(document, 2, "UsageError")


# -- backfill -------------------------------------------------------------------------------------------


def test_backfill_dry_run_prints_its_plan(bucket: Bucket, capsys: pytest.CaptureFixture[str]) -> None:
    bucket.images(3)
    status, document, _ = run_json(capsys, *local_args(bucket, "backfill", "--dry-run"))
    assert status == 0 and document["via"] == "dry-run"
    assert document["plan"]["SegmentCommonImage"]["objects"] == 3
    assert document["counts"] == {"new": 3}


def test_backfill_prints_its_summary_then_that_it_is_finished(
    bucket: Bucket, vision: FakeVision, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket.images(2)
    status, document, _ = run_json(capsys, *local_args(bucket, "backfill", "--local"))
    assert status == 0 and document["counts"] == {"done": 2}

    status, document, _ = run_json(capsys, *local_args(bucket, "backfill", "--local"))
    assert status == 0 and document["counts"] == {"done": 2}
    assert any("finished already" in note for note in document["notes"])


def test_backfill_with_nothing_left_after_its_checkpoint(
    bucket: Bucket, vision: FakeVision, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(3)
    assert run_json(capsys, *local_args(bucket, "backfill", "--local", "--limit", "2"))[0] == 0
    bucket.storage.delete(keys[2])
    status, document, _ = run_json(capsys, *local_args(bucket, "backfill", "--local"))
    assert status == 0 and any("nothing left after" in note for note in document["notes"])


def test_backfill_refusals_are_json_errors(
    bucket: Bucket, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    status, document, _ = run_json(capsys, *local_args(bucket, "backfill", "--dry-run"))
    assert status == 2
    refused(document, 2, "NothingMatches")

    status, document, _ = run_json(capsys, "backfill", "--bucket-dir", str(bucket.root), "--dry-run")
    assert status == 2
    refused(document, 2, "InvalidConfiguration")  # which bucket? (no SEGFLOW_BUCKET)

    status, document, _ = run_json(
        capsys, "backfill", "elsewhere", "--bucket-dir", str(bucket.root), "--local"
    )
    assert status == 2
    refused(document, 2, "NoSuchBucket")


def test_backfill_interrupted_before_sending_is_a_json_error(
    bucket: Bucket, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.images(1)

    def ctrl_c(*_args: Any, **_kwargs: Any) -> Any:
        raise KeyboardInterrupt  # Ctrl-C while the first listing page is awaited

    monkeypatch.setattr(backfill_run, "list_objects", ctrl_c)
    status, document, _ = run_json(capsys, *local_args(bucket, "backfill", "--dry-run"))
    assert status == 130
    refused(document, 130, "Interrupted")


# -- redrive --------------------------------------------------------------------------------------------


def test_redrive_dry_run_and_its_refusals(
    bucket: Bucket, vision: FakeVision, capsys: pytest.CaptureFixture[str]
) -> None:
    status, document, _ = run_json(capsys, *local_args(bucket, "redrive", "--dry-run"))
    assert status == 2
    refused(document, 2, "NothingMatches")

    bucket.put("incoming/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    assert run_json(capsys, *local_args(bucket, "backfill", "--local"))[0] == 1  # one failure record
    status, document, _ = run_json(capsys, *local_args(bucket, "redrive", "--dry-run"))
    assert status == 0 and document["counts"] == {"would-send": 1}

    status, document, _ = run_json(
        capsys, "redrive", "elsewhere", "--bucket-dir", str(bucket.root), "--local"
    )
    assert status == 2
    refused(document, 2, "NoSuchBucket")
