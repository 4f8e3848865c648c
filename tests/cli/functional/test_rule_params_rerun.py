"""After a rule's parameters change, a backfill runs the objects again, and its dry run says so (issue 18,
bug 5).

GIVEN a local-directory bucket backfilled under a rule (SegmentHead), against the fake imageseg
WHEN the rule gains a parameter (ReturnForm=mask) and the operator looks with `--dry-run`, then runs
     `segflow backfill --local --restart`
THEN the dry run counts the objects as `rerun`, the backfill calls the service once per object with the
     new parameter, and another backfill calls nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.fake_api import FakeApi
from tests.support.ops import BUCKET, Bucket, local_bucket, run_cli
from tests.support.services_harness import FakeVision, ResultServer

HEAD = {"prefix": "incoming/photos/", "action": "SegmentHead"}


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeApi, results: ResultServer) -> Bucket:
    FakeVision(api, results)
    return local_bucket(tmp_path, monkeypatch, api)


def test_a_backfill_after_a_parameter_change_runs_each_object_once_more(
    bucket: Bucket, api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = bucket.images(3)
    backfill = ["backfill", BUCKET, "--bucket-dir", str(bucket.root)]
    monkeypatch.setenv("SEGFLOW_RULES", json.dumps([HEAD]))
    assert run_cli(capsys, *backfill, "--local")[0] == 0
    assert len(api.requests_for("SegmentHead")) == 3

    monkeypatch.setenv("SEGFLOW_RULES", json.dumps([{**HEAD, "params": {"ReturnForm": "mask"}}]))
    status, out, _ = run_cli(capsys, *backfill, "--dry-run", "--restart", "--json")
    assert status == 0 and json.loads(out)["counts"] == {"rerun": 3}
    status, out, _ = run_cli(capsys, *backfill, "--dry-run", "--restart")
    assert "3 done or failed with other rule parameters (to process again)" in out

    status, out, _ = run_cli(capsys, *backfill, "--local", "--restart")
    assert status == 0 and "3 done" in out
    new_calls = api.requests_for("SegmentHead")[3:]
    assert sorted(c.params["ImageURL"].split("?")[0].split(BUCKET + "/")[-1] for c in new_calls) == keys
    assert {c.params.get("ReturnForm") for c in new_calls} == {"mask"}

    assert run_cli(capsys, *backfill, "--local", "--restart")[0] == 0
    assert len(api.requests_for("SegmentHead")) == 6  # done with these parameters: duplicates
