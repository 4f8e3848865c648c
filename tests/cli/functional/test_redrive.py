"""`segflow redrive`: after the cause of a window of failures is fixed, exactly those objects go again.

The failures are made the way a broken deployment makes them — the real handler, the fake vision service
answering what the real one answers (a RAM denial, a bad rule, a refused image) — and redriven with the
real command, `--local` (the handler in this process) or `--via fc` (the loopback FC stand-in, which
verifies every signature and counts the events).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow.failure_records import FailureRecords
from segflow.records import RecordStore, record_id_for
from segflow.retry import RetryPolicy
from segflow.states import RecordStates
from tests.conftest import REPO_ROOT, SOURCE_ROOTS
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi, Reply
from tests.support.fc_standin import FcStandIn
from tests.support.ops import BUCKET, LAYOUT, Bucket, clean_environment, point_at, run_cli, submitted_keys
from tests.support.services_harness import FakeVision, ResultServer, png

FUNCTION = "segflow-on-upload"
DENIED = Reply.error(403, "Forbidden.RAM", "User not authorized to operate on the specified resource.")


@pytest.fixture
def fc() -> Iterator[FcStandIn]:
    with FcStandIn() as standin:
        standin.deploy(FUNCTION)
        yield standin
    assert standin.errors == []


@pytest.fixture
def bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeApi, fc: FcStandIn) -> Bucket:
    clean_environment(monkeypatch)
    point_at(monkeypatch, api)
    monkeypatch.setenv("SEGFLOW_FC_ENDPOINT", fc.url)
    monkeypatch.setattr(
        "segflow_cli.senders.SEND_RETRY", RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
    )
    (tmp_path / "buckets" / BUCKET).mkdir(parents=True)
    return Bucket(tmp_path / "buckets")


@pytest.fixture
def vision(api: FakeApi, results: ResultServer) -> FakeVision:
    return FakeVision(api, results)


def command(name: str, bucket: Bucket, *extra: str) -> list[str]:
    return [name, BUCKET, "--bucket-dir", str(bucket.root), *extra]


def with_faults(bucket: Bucket, api: FakeApi, capsys: pytest.CaptureFixture[str], keys: list[str]) -> None:
    """A backfill while the role may not call the API: every object ends with a fault record."""
    api.queue("SegmentCommonImage", *[DENIED] * len(keys))
    status, out, _ = run_cli(capsys, *command("backfill", bucket, "--local", "--keep-going"))
    assert status == 1, out
    assert {k: (d["Code"], d.get("Fault")) for k, d in bucket.failures().items()} == dict.fromkeys(
        keys, ("Forbidden.RAM", True)
    )


def records_sent(fc: FcStandIn) -> Counter[str]:
    from segflow.events import OssEvent

    return Counter(record.key for i in fc.invocations for record in OssEvent.from_payload(i.event))


def test_once_the_role_is_fixed_every_faulted_object_ends_with_its_result_only(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(9)
    with_faults(bucket, api, capsys, keys)

    status, out, _ = run_cli(capsys, *command("redrive", bucket, "--local", "--batch", "2"))

    assert status == 0, out
    assert set(bucket.manifests()) == set(keys)
    assert bucket.failures() == {}  # superseded by the results: records and index entries gone
    assert submitted_keys(api) == dict.fromkeys(keys, 2)  # the refused call, then the paid one
    assert "9 done" in out


def test_a_bad_rule_fixed_then_redriven(
    bucket: Bucket,
    vision: FakeVision,
    api: FakeApi,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Failures written before any record existed (an unknown action) carry no RecordId: just sent."""
    keys = bucket.images(4, "incoming/faces")
    monkeypatch.setenv("SEGFLOW_RULES", json.dumps([{"prefix": "incoming/faces/", "action": "SegmentHeads"}]))
    assert run_cli(capsys, *command("backfill", bucket, "--local"))[0] == 1
    failures = bucket.failures()
    assert {d["Code"] for d in failures.values()} == {"UnsupportedOperation"}
    assert not any(d.get("RecordId") for d in failures.values())

    monkeypatch.setenv("SEGFLOW_RULES", json.dumps([{"prefix": "incoming/faces/", "action": "SegmentHead"}]))
    status, out, _ = run_cli(capsys, *command("redrive", bucket, "--local", "--code", "UnsupportedOperation"))

    assert status == 0, out
    assert bucket.manifests() == dict.fromkeys(keys, "SegmentHead") and bucket.failures() == {}


@pytest.mark.parametrize("second_code", ["InvalidImage.Content", "InvalidImage.Resolution"])
def test_failing_again_leaves_one_failure_record_with_the_new_code_and_time(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str], second_code: str
) -> None:
    (key,) = bucket.images(1)
    api.queue("SegmentCommonImage", Reply.error(400, "InvalidImage.Content", "the image cannot be read"))
    assert run_cli(capsys, *command("backfill", bucket, "--local"))[0] == 1
    first = bucket.failures()[key]
    assert first["RecordId"] and first.get("Fault") is None
    time.sleep(1.1)  # failure records carry their time to the second

    api.queue("SegmentCommonImage", Reply.error(400, second_code, "still not readable"))
    status, out, _ = run_cli(capsys, *command("redrive", bucket, "--local"))

    assert status == 1 and f"failed     {key}  {second_code}" in out
    again = bucket.failures()  # one record, one index entry
    assert list(again) == [key]
    assert again[key]["Code"] == second_code and again[key]["Time"] > first["Time"]
    record = RecordStore(bucket.storage, LAYOUT).load(first["RecordId"])
    assert record is not None and record.state == RecordStates.FAILED

    status, _, _ = run_cli(capsys, *command("redrive", bucket, "--local"))  # the cause is gone now
    assert status == 0 and list(bucket.manifests()) == [key] and bucket.failures() == {}
    assert submitted_keys(api) == {key: 3}


def left_failure(bucket: Bucket, key: str, etag: str, record_id: str) -> None:
    """A SegmentCommonImage failure record of `key` as an earlier attempt wrote it."""
    FailureRecords(bucket.storage, LAYOUT).write(
        {
            "Key": key,
            "ETag": etag,
            "Action": "SegmentCommonImage",
            "Code": "InternalError",
            "Time": "2026-01-01T00:00:00Z",
            "RecordId": record_id,
        }
    )


def test_a_failure_superseded_by_a_result_is_cleared_and_never_sent(
    bucket: Bucket, vision: FakeVision, api: FakeApi, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(3)
    assert run_cli(capsys, *command("backfill", bucket, "--local"))[0] == 0
    info = bucket.storage.head(keys[0])
    # A failure record left behind by an earlier attempt (its cleanup after the result was interrupted).
    left_failure(bucket, keys[0], info.etag, record_id_for(BUCKET, keys[0], info.etag, "SegmentCommonImage"))

    status, out, _ = run_cli(capsys, *command("redrive", bucket, "--via", "fc"))

    assert status == 0, out
    assert fc.invocations == [] and bucket.failures() == {}
    assert "1 had a result already" in out


def test_a_failure_whose_attempt_was_superseded_is_never_sent_again(
    bucket: Bucket, vision: FakeVision, api: FakeApi, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record that ended `superseded` (issue 15 §1: its object was overwritten or deleted before its
    outcome could be written) is not redriven, even if a failure record still names its key and ETag."""
    keys = bucket.images(2)
    info = bucket.storage.head(keys[0])
    store = RecordStore(bucket.storage, LAYOUT)
    record = store.begin(BUCKET, keys[0], info.etag, "SegmentCommonImage").record
    store.mark_superseded(record)
    left_failure(bucket, keys[0], info.etag, record.record_id)

    status, out, _ = run_cli(capsys, *command("redrive", bucket, "--via", "fc", "--json"))

    assert status == 0, out
    assert fc.invocations == [] and api.count() == 0
    assert json.loads(out)["counts"] == {"superseded": 1}
    reread = store.load(record.record_id)
    assert reread is not None and reread.state == RecordStates.SUPERSEDED
    assert bucket.keys(LAYOUT.jobs_prefix + "redrives/") == [], "no redrive marker was taken"


def test_two_redrives_at_once_send_each_object_once(
    bucket: Bucket, vision: FakeVision, api: FakeApi, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(24)
    with_faults(bucket, api, capsys, keys)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SEGFLOW_", "ALIBABA_CLOUD_"))},
        "PYTHONPATH": os.pathsep.join(map(str, (*SOURCE_ROOTS, REPO_ROOT))),
        "SEGFLOW_FC_ENDPOINT": fc.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": TEST_CREDENTIALS.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": TEST_CREDENTIALS.access_key_secret,
    }
    args = [sys.executable, "-m", "segflow_cli", *command("redrive", bucket, "--via", "fc")]
    args += ["--batch", "2", "--qps", "40", "--json"]
    both = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in both]

    assert [p.returncode for p in both] == [0, 0], outputs
    summaries: list[dict[str, Any]] = [json.loads(out) for out, _ in outputs]
    assert records_sent(fc) == dict.fromkeys(keys, 1)
    assert sum(s["counts"].get("sent", 0) for s in summaries) == len(keys)
    assert sum(s["counts"].get("held", 0) for s in summaries) == len(keys)  # each one the other's
    assert {r.signature_error for r in fc.requests} == {None}


def test_a_refused_send_gives_its_objects_back_for_the_next_redrive(
    bucket: Bucket, vision: FakeVision, api: FakeApi, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(4)
    api.queue("SegmentCommonImage", *[Reply.error(400, "InvalidImage.Content")] * len(keys))
    assert run_cli(capsys, *command("backfill", bucket, "--local"))[0] == 1
    record_ids = [d["RecordId"] for d in bucket.failures().values()]

    status, out, _ = run_cli(
        capsys, *command("redrive", bucket, "--via", "fc", "--function", "segflow-upload")
    )

    assert status == 1 and "FunctionNotFound" in out
    assert bucket.keys(f"{LAYOUT.jobs_prefix}redrives/") == []
    records = RecordStore(bucket.storage, LAYOUT)
    assert {records.load(r).state for r in record_ids} == {RecordStates.FAILED}  # type: ignore[union-attr]

    status, _, _ = run_cli(capsys, *command("redrive", bucket, "--via", "fc"))
    assert status == 0 and records_sent(fc) == dict.fromkeys(keys, 1)
    assert {records.load(r).state for r in record_ids} == {RecordStates.SUBMITTING}  # type: ignore[union-attr]


def test_filters_pick_exactly_their_failures_and_a_dry_run_touches_nothing(
    bucket: Bucket, vision: FakeVision, api: FakeApi, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    faulted = bucket.images(3, "incoming/a")
    broken = ["incoming/b/broken-1.png", "incoming/b/broken-2.png"]
    for key in broken:
        bucket.put(key, b"\x89PNG\r\n\x1a\n" + b"\x00" * 12)
    api.queue("SegmentCommonImage", *[DENIED] * len(faulted))
    assert run_cli(capsys, *command("backfill", bucket, "--local", "--keep-going"))[0] == 1
    assert {k: d["Code"] for k, d in bucket.failures().items()} == {
        **dict.fromkeys(faulted, "Forbidden.RAM"),
        **dict.fromkeys(broken, "InvalidImage.Content"),
    }
    before = bucket.snapshot()

    def would_send(*extra: str) -> int:
        status, out, _ = run_cli(capsys, *command("redrive", bucket, "--dry-run", "--json", *extra))
        assert status == 0, out
        return int(json.loads(out)["counts"].get("would-send", 0))

    assert would_send() == 5
    assert would_send("--kind", "fault") == 3
    assert would_send("--kind", "failed", "--code", "InvalidImage.Content") == 2
    assert would_send("--prefix", "b/") == 2
    assert would_send("--action", "SegmentCommonImage", "--code", "Forbidden.RAM") == 3
    assert would_send("--since", "1h") == 5
    assert bucket.snapshot() == before and fc.invocations == []

    for extra in (["--action", "SegmentVideoBody"], ["--until", "2000-01-01"], ["--code", "Nope"]):
        status, _, err = run_cli(capsys, *command("redrive", bucket, "--via", "fc", *extra))
        assert status == 2 and "no failure record" in err
    assert fc.invocations == []


def test_a_fault_stops_a_local_redrive_and_what_it_finished_stays_finished(
    bucket: Bucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(4)
    api.queue("SegmentCommonImage", *[Reply.error(400, "InvalidImage.Content")] * len(keys))
    assert run_cli(capsys, *command("backfill", bucket, "--local"))[0] == 1
    record_ids = {k: d["RecordId"] for k, d in bucket.failures().items()}
    api.queue("SegmentCommonImage", Reply.ok({"ImageURL": vision.results.add(png((64, 48), "RGBA"), ".png")}))
    api.queue("SegmentCommonImage", DENIED)  # the role lost its permission in the middle of the redrive

    status, out, _ = run_cli(capsys, *command("redrive", bucket, "--local", "--batch", "4", "--workers", "1"))

    assert status == 1 and "deployment fault Forbidden.RAM" in out
    states = {k: RecordStore(bucket.storage, LAYOUT).load(r).state for k, r in record_ids.items()}  # type: ignore[union-attr]
    (faulted,) = [k for k, state in states.items() if state != RecordStates.DONE]  # the one event's order
    assert states[faulted] == RecordStates.SUBMITTING  # a fault leaves it retryable
    assert {k: d.get("Fault") for k, d in bucket.failures().items()} == {faulted: True}
    assert sorted(bucket.manifests()) == sorted(set(keys) - {faulted})  # finished, and stays finished

    status, _, _ = run_cli(capsys, *command("redrive", bucket, "--local"))  # the role is fixed again
    assert status == 0 and sorted(bucket.manifests()) == keys and bucket.failures() == {}
