"""`segflow backfill --local` over a local-directory bucket: the real command, the real on_upload and
collect_jobs handlers in the process, the fake vision service over loopback (signatures verified).

GIVEN files that were in the bucket before segflow was deployed,
WHEN an operator runs `segflow backfill --local`,
THEN each ends with one result or one failure record, as if just uploaded, each paid for once; a second
run costs nothing; an interrupted run continues where it stopped; bad input exits 2 and sends nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow_cli import backfill_run
from segflow_cli.output import INTERRUPTED
from tests.support.capped_api import CappedVision
from tests.support.fake_api import FakeApi, Reply
from tests.support.ops import BUCKET, LAYOUT, Bucket, clean_environment, point_at, run_cli, submitted_keys
from tests.support.services_harness import FakeVision, ResultServer


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> Bucket:
    clean_environment(monkeypatch)
    point_at(monkeypatch, api)
    (tmp_path / "buckets" / BUCKET).mkdir(parents=True)
    return Bucket(tmp_path / "buckets")


@pytest.fixture
def vision(api: FakeApi, results: ResultServer) -> FakeVision:
    return FakeVision(api, results)


def local(bucket: Bucket, *extra: str) -> list[str]:
    return ["backfill", BUCKET, "--bucket-dir", str(bucket.root), "--local", *extra]


def checkpoint(bucket: Bucket) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(bucket.storage.get_bytes(LAYOUT.backfill_checkpoint_key))
    return loaded


def test_every_object_ends_with_one_result_or_one_failure_record(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    images = [*bucket.images(12), "incoming/猫 咪+1.jpg"]
    bucket.put(images[-1], bucket.storage.get_bytes(images[0]))
    clip = bucket.video()
    bucket.put("incoming/broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)  # a header, then nothing
    bucket.put("segmented/old/cutout.png", b"x")  # not an input: never listed

    status, out, _ = run_cli(capsys, *local(bucket, "--batch", "3"))

    assert status == 1, out  # one object failed
    assert bucket.manifests() == {**dict.fromkeys(images, "SegmentCommonImage"), clip: "SegmentVideoBody"}
    assert {k: d["Code"] for k, d in bucket.failures().items()} == {
        "incoming/broken.png": "InvalidImage.Content"
    }
    assert submitted_keys(api) == dict.fromkeys(images, 1)  # each paid for once
    assert submitted_keys(api, "SegmentVideoBody") == {clip: 1}
    assert "14 done, 1 failed" in out and "incoming/broken.png  InvalidImage.Content" in out
    assert checkpoint(bucket)["Finished"] is True


def test_a_finished_backfill_is_a_no_op_and_a_restart_costs_no_vision_call(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(8)
    assert run_cli(capsys, *local(bucket))[0] == 0
    paid = len(api.requests)

    status, out, _ = run_cli(capsys, *local(bucket))
    assert status == 0 and "finished already" in out
    assert len(api.requests) == paid  # not even listed again

    status, out, _ = run_cli(capsys, *local(bucket, "--restart"))
    assert status == 0 and "8 done" in out
    assert len(api.requests) == paid  # every object a duplicate of its done record
    assert set(bucket.manifests()) == set(keys)


def test_an_interrupted_backfill_continues_after_its_checkpoint(
    bucket: Bucket,
    vision: FakeVision,
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = bucket.images(30)
    real_batched = backfill_run.batched

    def ctrl_c_after_three(items: Any, size: int) -> Iterator[Any]:
        for number, batch in enumerate(real_batched(items, size)):
            if number == 3:
                raise KeyboardInterrupt  # what Ctrl-C raises in the main thread, between two batches
            yield batch

    monkeypatch.setattr(backfill_run, "batched", ctrl_c_after_three)
    status, out, _ = run_cli(capsys, *local(bucket, "--batch", "4"))
    assert status == INTERRUPTED and "run the same command to continue" in out
    stopped = checkpoint(bucket)
    assert stopped["StartAfter"] == keys[11] and stopped["Finished"] is False  # three batches of four
    assert sorted(bucket.manifests()) == keys[:12]

    monkeypatch.setattr(backfill_run, "batched", real_batched)
    status, out, _ = run_cli(capsys, *local(bucket, "--batch", "4"))
    assert status == 0 and "18 done" in out
    assert submitted_keys(api) == dict.fromkeys(keys, 1)
    assert checkpoint(bucket)["Counts"] == {"done": 30} and checkpoint(bucket)["Finished"] is True


def test_limit_takes_that_many_and_the_next_run_goes_on(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(7)
    assert run_cli(capsys, *local(bucket, "--limit", "5"))[0] == 0
    assert sorted(bucket.manifests()) == keys[:5] and checkpoint(bucket)["Finished"] is False
    assert run_cli(capsys, *local(bucket, "--limit", "5"))[0] == 0
    assert sorted(bucket.manifests()) == keys and checkpoint(bucket)["Finished"] is True
    assert submitted_keys(api) == dict.fromkeys(keys, 1)


def test_filters_and_a_checkpoint_file(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old = bucket.images(3, "incoming/2023")
    new = bucket.images(3, "incoming/2024")
    bucket.put("incoming/2024/raw.JPG", bucket.storage.get_bytes(new[0]))
    bucket.put("incoming/2024/notes.txt", b"not an image")
    state = tmp_path / "backfill-2024.json"

    status, _, _ = run_cli(
        capsys, *local(bucket, "--prefix", "2024/", "--suffix", ".jpg", "--checkpoint", str(state))
    )

    assert status == 0
    assert sorted(bucket.manifests()) == sorted([*new, "incoming/2024/raw.JPG"])
    assert not set(old) & set(submitted_keys(api))
    assert json.loads(state.read_text())["Filters"]["Prefix"] == "incoming/2024/"
    assert LAYOUT.backfill_checkpoint_key not in bucket.keys(LAYOUT.jobs_prefix)


def test_the_vision_api_never_sees_more_than_its_quota_one_submission_each_rerun_free(
    bucket: Bucket,
    api: FakeApi,
    results: ResultServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A slow (50 ms) service with a quota of 10 requests in any second, as imageseg has the account's QPS;
    SEGFLOW_QPS a little under it, as the README advises (bench/backfill.py measures it at the quota)."""
    capped = CappedVision(api, results, cap=10, latency=0.05)
    keys = bucket.images(40)
    monkeypatch.setenv("SEGFLOW_QPS", "9")

    status, out, _ = run_cli(capsys, *local(bucket, "--batch", "2", "--workers", "8"))

    assert status == 0, out
    assert capped.throttled == 0 and api.max_requests_in_window(1.0) <= 10
    assert capped.submissions == dict.fromkeys(keys, 1)
    assert run_cli(capsys, *local(bucket, "--restart", "--workers", "8"))[0] == 0
    assert capped.submissions == dict.fromkeys(keys, 1)  # the rerun paid for nothing


def test_dry_run_counts_per_action_and_touches_nothing(
    bucket: Bucket,
    vision: FakeVision,
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SEGFLOW_RULES", json.dumps([{"prefix": "incoming/faces/", "action": "SegmentHead"}]))
    bucket.images(4)
    bucket.images(2, "incoming/faces")
    bucket.video()
    bucket.put("incoming/broken.png", b"\x89PNG\r\n\x1a\n")
    before = bucket.snapshot()

    status, out, _ = run_cli(capsys, "backfill", BUCKET, "--bucket-dir", str(bucket.root), "--dry-run")

    assert status == 0
    assert bucket.snapshot() == before and api.requests == []
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "4 to process" in lines["SegmentCommonImage"]
    assert "2 to process" in lines["SegmentHead"]
    assert "1 to process" in lines["SegmentVideoBody"]
    assert "would fail InvalidImage.Content" in out
    assert "8 objects would be sent" in out


def test_a_deployment_fault_stops_the_backfill_and_the_next_run_goes_on(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(6)
    api.queue(
        "SegmentCommonImage", Reply.error(403, "Forbidden.RAM", "the role may not call SegmentCommonImage")
    )

    status, out, _ = run_cli(capsys, *local(bucket, "--batch", "2", "--workers", "1"))

    assert status == 1 and "deployment fault Forbidden.RAM" in out
    assert submitted_keys(api)[keys[0]] == 1  # a fault is not redelivered
    assert bucket.failures()[keys[0]]["Fault"] is True
    assert checkpoint(bucket)["StartAfter"] == ""  # nothing past the faulted batch is taken for done

    status, out, _ = run_cli(capsys, *local(bucket, "--batch", "2", "--workers", "1"))  # the role is fixed
    assert status == 0, out
    assert sorted(bucket.manifests()) == keys and bucket.failures() == {}
    assert submitted_keys(api) == {
        keys[0]: 2,
        **dict.fromkeys(keys[1:], 1),
    }  # the refused call was not billed


@pytest.mark.parametrize(
    ("bucket_name", "extra", "message"),
    [
        ("no-such-bucket", [], "does not exist (NoSuchBucket)"),
        (BUCKET, ["--suffix", ".tiff"], "no object of bucket"),
        (BUCKET, ["--via", "local", "--prefix", "nothing-here/"], "no object of bucket"),
    ],
)
def test_bad_input_exits_2_and_sends_nothing(
    bucket: Bucket,
    vision: FakeVision,
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    bucket_name: str,
    extra: list[str],
    message: str,
) -> None:
    bucket.images(2)
    args = ["backfill", bucket_name, "--bucket-dir", str(bucket.root), "--local", *extra]
    status, _, err = run_cli(capsys, *args)
    assert status == 2 and message in err
    assert api.requests == []


def test_a_checkpoint_of_another_bucket_or_other_filters_is_refused(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bucket.images(3)
    state = tmp_path / "cp.json"
    state.write_text(
        json.dumps({"Version": 1, "Bucket": "other-bucket", "Filters": {}, "StartAfter": "incoming/x.jpg"})
    )
    status, _, err = run_cli(capsys, *local(bucket, "--checkpoint", str(state)))
    assert status == 2 and "about bucket other-bucket" in err

    bucket.storage.put_bytes(
        LAYOUT.backfill_checkpoint_key,
        json.dumps(
            {
                "Version": 1,
                "Bucket": BUCKET,
                "Filters": {"Prefix": "incoming/2023/", "Suffixes": [], "Since": None, "Until": None},
                "StartAfter": "incoming/2023/a.jpg",
                "Finished": False,
            }
        ).encode(),
    )
    status, _, err = run_cli(capsys, *local(bucket))
    assert status == 2 and "unfinished backfill of other objects" in err
    assert api.requests == []


def test_no_way_to_send_is_a_usage_error(bucket: Bucket, capsys: pytest.CaptureFixture[str]) -> None:
    bucket.images(1)
    status, _, err = run_cli(capsys, "backfill", BUCKET, "--bucket-dir", str(bucket.root))
    assert status == 2 and "--via fc" in err and "--local" in err
