"""`segflow status` over states the real handlers leave behind, in a local bucket directory and over OSS.

GIVEN a bucket the on_upload and collect_jobs handlers worked on (the fake vision API on loopback): two
images done, an image the service refused (`InvalidImage.Content`), a video job that failed
(`PROCESS_FAILED`), an image that hit a deployment fault (a wrong AccessKey secret: left `submitting`,
retryable, with a `fault` record), a video still processing, an event record deferred for lack of time,
an image waiting for its RefineMask mask, and one collector tick;
WHEN `segflow status` reads it (the command itself, in process),
THEN each state is counted, the newest failures carry their key, code and message, `--fail-on-failures`
exits 1 for what needs a person, and a bucket that cannot be read is one line and exit 2.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import oss2
import pytest
from pytest_mock import MockerFixture

from segflow.client import VisionClient
from segflow.errors import SegflowError
from segflow.ratelimit import RateLimiter
from segflow.signing import Credentials
from segflow_cli.main import main
from tests.support.fake_api import TEST_CREDENTIALS, Reply
from tests.support.oss_stub import stub_oss
from tests.support.services_harness import BUCKET, FAST_RETRY, Harness, fc_context, jpeg, mp4, oss_event

DONE = ("incoming/photos/a.jpg", "incoming/photos/b.jpg")
REFUSED = "incoming/photos/broken.jpg"
FAULTY = "incoming/photos/faulty.jpg"
WAITING = "incoming/clips/long.mp4"
FAILED_VIDEO = "incoming/clips/bad.mp4"
LATE = "incoming/photos/late.jpg"
UNPAIRED = "incoming/refine/photo.jpg"
RULES = ({"prefix": "incoming/refine/", "action": "RefineMask", "pair": "{stem}.mask.png"},)


@pytest.fixture(autouse=True)
def plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default prefixes (as the harness uses), and no bucket directory unless the test names one."""
    for name in list(os.environ):
        if name.startswith("SEGFLOW_"):
            monkeypatch.delenv(name)


@pytest.fixture
def h(make: Any) -> Harness:
    """The default harness, with a RefineMask pairing rule under incoming/refine/."""
    built: Harness = make(rules=RULES)
    return built


def with_every_state(h: Harness) -> Harness:
    for key in (*DONE, REFUSED, FAULTY, LATE, UNPAIRED):
        h.put(key, jpeg((64, 64)))
    assert h.on_upload(oss_event(UNPAIRED))["waiting"] == 1
    h.on_upload(oss_event(*DONE))
    h.api.queue(
        "SegmentCommonImage", Reply.error(400, "InvalidImage.Content", "The image cannot be decoded.")
    )
    h.on_upload(oss_event(REFUSED))
    good = h.deps.vision
    wrong = Credentials(TEST_CREDENTIALS.access_key_id, "a-secret-someone-mistyped")
    limiter = RateLimiter(1000.0, burst=100)
    h.deps.vision = VisionClient(wrong, endpoints=h.api.endpoints(), rate_limiter=limiter, retry=FAST_RETRY)
    with pytest.raises(SegflowError):
        h.on_upload(oss_event(FAULTY))
    h.deps.vision = good
    for key, statuses in ((WAITING, ["PROCESSING"] * 20), (FAILED_VIDEO, ["PROCESS_FAILED"])):
        h.vision.job_statuses = statuses
        h.put(key, mp4())
        h.on_upload(oss_event(key))
    with pytest.raises(SegflowError):
        h.on_upload(oss_event(LATE), fc_context(timeout=30))  # 30 s left, 45 s needed: deferred
    h.collect()
    return h


def status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["status", BUCKET, *args])
    out, err = capsys.readouterr()
    return code, out, err


def status_json(h: Harness, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = status(capsys, "--bucket-dir", str(h.root), "--json", *args)
    shape: dict[str, Any] = json.loads(out)
    return code, shape


def backdate(h: Harness, prefix: str, seconds: float) -> None:
    """Files under `prefix` as if written `seconds` ago (what a listing's LastModified then says)."""
    for key in h.keys(prefix):
        path = h.storage.path_for(key)  # type: ignore[attr-defined]
        when = path.stat().st_mtime - seconds
        os.utime(path, (when, when))


def test_status_counts_every_state_the_handlers_leave_behind(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, shape = status_json(with_every_state(h), capsys)
    assert code == 0
    assert (shape["schema"], shape["bucket"], shape["done"]) == (1, BUCKET, 2)
    assert shape["failed"] == {"total": 2, "by_code": [
        {"code": "InvalidFile.Content", "action": "SegmentVideoBody", "count": 1},
        {"code": "InvalidImage.Content", "action": "SegmentCommonImage", "count": 1},
    ]}  # fmt: skip
    assert shape["faults"] == {"total": 1, "by_code": [
        {"code": "SignatureDoesNotMatch", "action": "SegmentCommonImage", "count": 1},
    ]}  # fmt: skip
    assert shape["pending"]["count"] == 1 and 0 <= shape["pending"]["oldest_age_seconds"] < 60
    assert (shape["submitting"]["count"], shape["submitting"]["stuck"]) == (1, 0)
    assert shape["deferred"]["count"] == shape["waiting"]["count"] == 1
    collector = shape["collector"]
    assert collector["stale"] is False and collector["owner"] and collector["age_seconds"] < 60
    assert (shape["healthy"], shape["problems"]) == (False, ["failed", "faults"])


def test_the_newest_failures_come_first_with_key_code_and_message(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    _, shape = status_json(with_every_state(h), capsys, "--failures", "2")
    newest, second = shape["recent_failures"]
    assert (newest["key"], newest["kind"], newest["code"], newest["action"]) == (
        FAILED_VIDEO, "failed", "InvalidFile.Content", "SegmentVideoBody",
    )  # fmt: skip
    assert newest["message"] and newest["record"] == h.deps.layout.failure_key(FAILED_VIDEO)
    assert (second["key"], second["kind"], second["code"]) == (FAULTY, "fault", "SignatureDoesNotMatch")
    assert newest["time"].endswith("Z") and second["message"]


def test_an_upload_submitting_past_the_stall_time_is_stuck_and_fails_the_check(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    with_every_state(h)
    backdate(h, h.deps.layout.inflight_prefix, h.deps.stall_seconds + 60)
    code, shape = status_json(h, capsys, "--fail-on-failures")
    assert code == 1
    assert (shape["submitting"]["stuck"], shape["submitting"]["stuck_after_seconds"]) == (1, 300)
    assert shape["problems"] == ["failed", "faults", "stuck_uploads"]


def test_a_bucket_where_everything_is_done_and_the_collector_runs_is_healthy(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    for key in DONE:
        h.put(key, jpeg((64, 64)))
    h.on_upload(oss_event(*DONE))
    h.collect()
    code, out, _ = status(capsys, "--bucket-dir", str(h.root), "--fail-on-failures")
    assert code == 0 and out.rstrip().endswith("healthy")
    assert status_json(h, capsys)[1]["problems"] == []


def test_an_attempt_superseded_by_a_newer_version_is_counted_apart_and_needs_no_one(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """A slow call for an image's first version answers after the second version was done: the first
    ends `superseded` (issue 15 §1), counted neither done nor failed, and the bucket is healthy."""
    key = DONE[0]
    h.put(key, jpeg((64, 64)))

    def overwrite() -> None:
        h.put(key, jpeg((48, 48)))
        h.on_upload(oss_event(key))

    h.vision.during_next_call(overwrite)
    assert h.on_upload(oss_event(key))["superseded"] == 1
    h.collect()

    code, shape = status_json(h, capsys, "--fail-on-failures")
    assert code == 0 and (shape["done"], shape["superseded"], shape["failed"]["total"]) == (1, 1, 0)
    assert (shape["healthy"], shape["problems"]) == (True, [])
    code, out, _ = status(capsys, "--bucket-dir", str(h.root))
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 6}
    assert "1" in rows["superseded"] and "nothing written" in rows["superseded"]
    assert out.rstrip().endswith("healthy")


def test_a_collector_that_stopped_running_fails_the_check(
    h: Harness, capsys: pytest.CaptureFixture[str], mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deployed bucket (OSS): its timer should run the collector every minute, whatever is pending."""
    h.clock.advance(-600)  # the last tick was ten minutes ago
    h.collect()
    on_oss(h, mocker, monkeypatch)
    code, out, _ = status(capsys, "--fail-on-failures")
    assert code == 1 and "needs attention: the collector is silent" in out
    assert "last run 10m" in out and "SILENT" in out
    code, out, _ = status(capsys, "--json", "--stale-after", "900", "--fail-on-failures")
    assert code == 0 and json.loads(out)["collector"]["stale"] is False


def test_a_local_bucket_needs_its_collector_only_while_jobs_wait_for_it(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    """A local bucket has no timer: `segflow run` runs the collector while it waits for its jobs, so a
    second `make demo`, where every file is done already, leaves it silent, and that is expected."""
    for key in DONE:
        h.put(key, jpeg((64, 64)))
    h.on_upload(oss_event(*DONE))
    h.clock.advance(-600)
    h.collect()
    code, out, _ = status(capsys, "--bucket-dir", str(h.root), "--fail-on-failures")
    assert code == 0 and out.rstrip().endswith("healthy"), out
    assert "last run 10m00s ago: ok (local bucket, no timer)" in out
    code, shape = status_json(h, capsys)
    assert shape["collector"]["deployed"] is False and shape["collector"]["stale"] is True

    h.vision.job_statuses = ["PROCESSING"] * 5
    h.put(WAITING, mp4())
    h.on_upload(oss_event(WAITING))  # a video job now waits for a collector that does not run
    code, out, _ = status(capsys, "--bucket-dir", str(h.root), "--fail-on-failures")
    assert code == 1 and "needs attention: the collector is silent" in out


def test_the_table_shows_each_state_the_newest_failures_and_a_verdict(
    h: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = status(capsys, "--bucket-dir", str(with_every_state(h).root))
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 6}
    assert {
        "done", "superseded", "failed", "fault", "pending", "submitting", "deferred", "waiting", "collector"
    } <= set(rows)  # fmt: skip
    assert "InvalidImage.Content" in out and "SignatureDoesNotMatch" in out and "retryable" in rows["fault"]
    assert "3 most recent failures" in out and REFUSED in out and "The image cannot be decoded." in out
    assert "needs attention: final failures, deployment faults" in out


def test_status_over_oss_reads_what_the_local_bucket_holds(
    h: Harness, capsys: pytest.CaptureFixture[str], mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same objects in OSS (the stubbed oss2.Bucket, dated to the second as OSS lists them) give the
    same status through oss2."""
    with_every_state(h)
    _, local = status_json(h, capsys)
    fake = on_oss(h, mocker, monkeypatch)

    code, out, _ = status(capsys, "--json")
    remote = json.loads(out)
    assert code == 0 and fake.calls_to("list_objects_v2")
    assert comparable(remote) == comparable(local)
    assert (remote["collector"]["deployed"], local["collector"]["deployed"]) == (True, False)


def on_oss(h: Harness, mocker: MockerFixture, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The harness's bucket copied into the stubbed oss2.Bucket (dated to the second as OSS lists them),
    with an AccessKey in the environment: `segflow status BUCKET` without --bucket-dir reads it."""
    stub_oss(mocker)
    fake = oss2.Bucket(
        oss2.Auth("LTAI-test-id", "test-secret"), "https://oss-cn-shanghai.aliyuncs.com", BUCKET
    )
    for key in h.keys(""):
        path = h.storage.path_for(key)  # type: ignore[attr-defined]
        fake.objects[key] = (path.read_bytes(), h.storage.head(key).etag, int(path.stat().st_mtime))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-test-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")
    return fake


def comparable(shape: dict[str, Any]) -> dict[str, Any]:
    """The status without what depends on the clock (ages, listing dates to the second) or on where the
    bucket is (a local one has no deployed collector)."""
    drop = {"checked_at", "oldest_at", "oldest_age_seconds", "age_seconds", "last_run", "deployed"}

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in drop}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    out = strip(shape)
    out["recent_failures"] = sorted(out["recent_failures"], key=lambda item: item["key"])
    return out  # type: ignore[no-any-return]


# -- bad input ------------------------------------------------------------------------------------------


def test_an_unknown_bucket_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "other-bucket").mkdir()
    code = main(["status", "no-such-bucket", "--bucket-dir", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err == f"segflow status: bucket 'no-such-bucket' does not exist under {tmp_path} (NoSuchBucket)\n"


def test_an_invalid_bucket_name_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["status", "Not_A_Bucket", "--bucket-dir", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "InvalidBucketName" in err


def test_a_bucket_directory_this_user_cannot_list_is_access_denied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The system refuses to list the bucket's folder (EACCES, what `chmod 0` gives any user but root;
    raised at `os.scandir`, where `os.walk` meets it, so the test holds when it runs as root too)."""
    bucket = tmp_path / BUCKET
    bucket.mkdir()
    real_scandir = os.scandir

    def refusing(path: Any = ".") -> Any:
        if isinstance(path, (str, os.PathLike)) and Path(path).is_relative_to(bucket):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    code = main(["status", BUCKET, "--bucket-dir", str(tmp_path)])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith(
        f"segflow status: access to bucket '{BUCKET}' under {tmp_path} was refused"
    )


def test_the_bucket_defaults_to_segflow_bucket_as_for_backfill_and_redrive(
    h: Harness, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    h.put(DONE[0], jpeg((64, 64)))  # the bucket's folder exists
    monkeypatch.setenv("SEGFLOW_BUCKET", BUCKET)
    code = main(["status", "--bucket-dir", str(h.root), "--json"])
    out, _ = capsys.readouterr()
    assert code == 0 and json.loads(out)["bucket"] == BUCKET
    monkeypatch.delenv("SEGFLOW_BUCKET")
    code = main(["status", "--bucket-dir", str(h.root)])
    _, err = capsys.readouterr()
    assert code == 2 and err == "segflow status: which bucket? name it, or set SEGFLOW_BUCKET\n"


def test_bad_option_values_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["--failures", "-1"], ["--failures", "many"], ["--stale-after", "0"]):
        with pytest.raises(SystemExit) as exited:
            main(["status", BUCKET, *args])
        assert exited.value.code == 2
