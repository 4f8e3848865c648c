"""`backfill --local` over a local bucket folder with no engine configured (issue 18, "Claims").

GIVEN a local-directory bucket (what `make demo` leaves) and none of the SEGFLOW_*_ENDPOINT variables set
WHEN the operator runs `segflow backfill … --local` without `--engine local`
THEN before anything is read or written it says that the handler would call Alibaba Cloud's real service
     and why every object would fail there (no AccessKey; or presigned URLs of a local folder the service
     cannot fetch), and exits 2 — or, with keys and the upload path, says it will make paid calls;
AND the checkpoint path a local backfill prints is the file it wrote.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.settings import Settings
from segflow_cli.localbucket import LocalBuckets
from segflow_cli.operate import warn_real_service
from tests.support.fake_api import FakeApi
from tests.support.ops import BUCKET, LAYOUT, Bucket, clean_environment, point_at, run_cli
from tests.support.services_harness import FakeVision, ResultServer


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    clean_environment(monkeypatch)
    (tmp_path / "buckets" / BUCKET).mkdir(parents=True)
    found = Bucket(tmp_path / "buckets")
    found.images(2)
    return found


def test_without_keys_it_refuses_before_touching_the_bucket(
    bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    before = bucket.snapshot()
    status, _, err = run_cli(capsys, "backfill", BUCKET, "--bucket-dir", str(bucket.root), "--local")
    assert status == 2
    assert "calls Alibaba Cloud's real service (https://imageseg.cn-shanghai.aliyuncs.com)" in err
    assert "no AccessKey" in err and "--engine local" in err
    assert bucket.snapshot() == before  # no record, no checkpoint, no failure record


def test_presigned_urls_of_a_local_folder_are_refused_too(
    bucket: Bucket, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-someone")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "a-real-looking-secret")
    monkeypatch.setenv("SEGFLOW_INPUT_URL", "presign")
    before = bucket.snapshot()
    status, _, err = run_cli(capsys, "redrive", BUCKET, "--bucket-dir", str(bucket.root), "--local")
    assert status == 2 and "cannot fetch the presigned URLs of a local folder" in err
    assert bucket.snapshot() == before


def test_with_keys_and_the_upload_path_it_says_the_calls_are_paid(
    bucket: Bucket, capsys: pytest.CaptureFixture[str]
) -> None:
    environ = {
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-someone",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cret-value",
    }
    warn_real_service(Settings.from_env(environ), LocalBuckets(bucket.root))
    err = capsys.readouterr().err
    assert "real service" in err and "LTAI-someone" in err and "paid calls" in err
    assert "s3cret-value" not in err


def test_the_checkpoint_path_printed_is_the_file_written(
    bucket: Bucket,
    api: FakeApi,
    results: ResultServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    point_at(monkeypatch, api)
    FakeVision(api, results)
    status, out, _ = run_cli(capsys, "backfill", BUCKET, "--bucket-dir", str(bucket.root), "--local")
    written = bucket.storage.path_for(LAYOUT.backfill_checkpoint_key)
    assert status == 0 and written.is_file()
    assert f"checkpoint: {written} (finished)" in out
