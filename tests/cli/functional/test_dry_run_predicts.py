"""A backfill dry run predicts the real outcome of each object (issue 18, "Smaller").

GIVEN a local-directory bucket holding files no action can take — a text file named `.txt`, a PNG cut
after its header, bytes that are no video under `.mp4`, and a photo that a rule sends to a video action
WHEN the operator runs `segflow backfill --dry-run`, then the real `segflow backfill --local`
THEN each file fails in the real run with the action and code the dry run said (one rule decides both:
     `segflow.validation.unreadable_failure` and `media_mismatch`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.support.fake_api import FakeApi
from tests.support.ops import BUCKET, Bucket, local_bucket, run_cli
from tests.support.services_harness import FakeVision, ResultServer, jpeg


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeApi, results: ResultServer) -> Bucket:
    FakeVision(api, results)
    return local_bucket(tmp_path, monkeypatch, api)


def test_the_dry_run_names_the_failure_the_real_run_records(
    bucket: Bucket, api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "SEGFLOW_RULES", json.dumps([{"prefix": "incoming/clips/", "action": "SegmentVideoBody"}])
    )
    bucket.put("incoming/notes.txt", b"meeting notes, not an image\n")
    bucket.put("incoming/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    bucket.put("incoming/fake.mp4", b"\x00" * 64)
    bucket.put("incoming/clips/still.jpg", jpeg((64, 48)))
    backfill = ["backfill", BUCKET, "--bucket-dir", str(bucket.root)]

    status, out, _ = run_cli(capsys, *backfill, "--dry-run", "--json")
    assert status == 0
    predicted = Counter(
        {
            (action, state): n
            for action, plan in json.loads(out)["plan"].items()
            for state, n in plan["states"].items()
        }
    )

    assert run_cli(capsys, *backfill, "--local")[0] == 1
    recorded = Counter((document["Action"], document["Code"]) for document in bucket.failures().values())
    assert predicted == recorded
    assert recorded[("SegmentCommonImage", "InvalidImage.Content")] == 2  # the .txt as the real run has it
    assert api.count() == 0  # none of them was worth a call
