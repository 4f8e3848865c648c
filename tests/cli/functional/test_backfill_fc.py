"""`segflow backfill --via fc`: asynchronous FC 3.0 invocations of the deployed on_upload, against the
loopback FC stand-in (tests/support/fc_standin.py: every request's ACS3 signature is verified, the 128 KB
async payload limit and FC's error answers are those of FC's documentation).

GIVEN objects in the bucket and a deployed on_upload function,
WHEN `segflow backfill --via fc` runs,
THEN every object is in exactly one real-format OSS event (its real size and ETag), several per event,
each event one signed asynchronous invocation, records paced at --qps; throttled and 5xx answers are
retried, any other refusal stops the run before the checkpoint moves past it; and the deployed function,
running the real handler, ends each object with one result, paid once.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow.events import OssEvent
from segflow.retry import RetryPolicy
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi
from tests.support.fc_standin import MAX_ASYNC_PAYLOAD, FcStandIn
from tests.support.ops import BUCKET, LAYOUT, Bucket, clean_environment, point_at, run_cli, submitted_keys
from tests.support.services_harness import fc_context, load_handler

FUNCTION = "segflow-on-upload"


@pytest.fixture
def fc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FcStandIn]:
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
        "segflow_cli.senders.SEND_RETRY", RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.05)
    )
    (tmp_path / "buckets" / BUCKET).mkdir(parents=True)
    return Bucket(tmp_path / "buckets")


def via_fc(bucket: Bucket, *extra: str) -> list[str]:
    return ["backfill", BUCKET, "--bucket-dir", str(bucket.root), "--via", "fc", *extra]


def records_sent(fc: FcStandIn) -> list[dict[str, Any]]:
    out = []
    for invocation in fc.invocations:
        for record in OssEvent.from_payload(invocation.event):
            out.append(
                {"key": record.key, "size": record.size, "etag": record.etag, "at": invocation.arrived}
            )
    return out


def test_every_object_goes_once_in_signed_async_events_of_several_records_paced_at_the_qps(
    bucket: Bucket, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = [*bucket.images(25), bucket.video()]

    status, out, _ = run_cli(capsys, *via_fc(bucket, "--batch", "4", "--qps", "20", "--workers", "3"))

    assert status == 0, out
    assert len(fc.invocations) == 7 and {i.invocation_type for i in fc.invocations} == {"Async"}
    assert {r.signature_error for r in fc.requests} == {None}
    assert all("x-fc-invocation-type" in r.signed_headers for r in fc.requests)
    sent = records_sent(fc)
    assert Counter(r["key"] for r in sent) == dict.fromkeys(keys, 1)
    for record in sent:
        info = bucket.storage.head(record["key"])
        assert (record["size"], record["etag"]) == (info.size, info.etag)
    assert max(len(OssEvent.from_payload(i.event)) for i in fc.invocations) == 4
    assert _most_records_in_a_second(sent) <= 20
    assert "26 sent" in out and "segflow status" in out
    checkpoint = json.loads(bucket.storage.get_bytes(LAYOUT.backfill_checkpoint_key))
    assert checkpoint["Finished"] is True and checkpoint["Counts"] == {"sent": 26}


def _most_records_in_a_second(sent: list[dict[str, Any]]) -> int:
    times = sorted(r["at"] for r in sent)
    return max(sum(1 for t in times if start <= t < start + 1.0) for start in times)


def test_events_of_long_keys_are_split_below_fcs_async_payload_limit(
    bucket: Bucket, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    data = bucket.storage.get_bytes(bucket.images(1)[0])
    # OSS keys reach 1,023 bytes; a local folder holds up to 255 bytes a name, so long keys are deep.
    folders = "/".join(["é" * 100] * 4)
    keys = [f"incoming/{folders}/{i:03d}.jpg" for i in range(60)]
    for key in keys:
        bucket.put(key, data)

    status, _, _ = run_cli(capsys, *via_fc(bucket, "--batch", "60", "--qps", "1000"))

    assert status == 0
    assert len(fc.invocations) > 1
    assert all(len(i.event) <= MAX_ASYNC_PAYLOAD // 2 for i in fc.invocations)
    assert sorted(r["key"] for r in records_sent(fc)) == sorted([*keys, "incoming/photos/img-00000.jpg"])


def test_throttled_and_5xx_answers_are_sent_again(
    bucket: Bucket, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(6)
    fc.refuse(2, 429, "ResourceExhausted", "concurrency exceeds the limit")
    fc.refuse(1, 503, "ResourceThrottled", "too many instances")
    fc.refuse(1, 500, "InternalServerError", "system error")

    status, _, _ = run_cli(capsys, *via_fc(bucket, "--batch", "3", "--qps", "1000", "--workers", "1"))

    assert status == 0
    assert Counter(r["key"] for r in records_sent(fc)) == dict.fromkeys(keys, 1)
    assert len(fc.requests) == 2 + 4  # two invocations, four refused tries


def test_a_refused_send_stops_the_run_and_the_next_run_sends_it(
    bucket: Bucket, fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = bucket.images(5)
    args = via_fc(bucket, "--function", "segflow-on-uplaod", "--batch", "2", "--qps", "1000")

    status, out, _ = run_cli(capsys, *args)

    assert status == 1 and "FunctionNotFound" in out
    assert fc.invocations == []
    checkpoint = json.loads(bucket.storage.get_bytes(LAYOUT.backfill_checkpoint_key))
    assert checkpoint["StartAfter"] == "" and checkpoint["Finished"] is False

    fc.deploy("segflow-on-uplaod")
    assert run_cli(capsys, *args)[0] == 0
    assert Counter(r["key"] for r in records_sent(fc)) == dict.fromkeys(keys, 1)


def test_the_deployed_function_ends_each_object_with_one_result_paid_once(
    bucket: Bucket,
    fc: FcStandIn,
    api: FakeApi,
    make: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The stand-in runs the real on_upload handler for each accepted event, as FC would, with the
    function's own wiring (its role's keys, the same bucket folder)."""
    deployed = make()  # the function's Deps, over tmp_path/buckets like `bucket`
    assert deployed.root == bucket.root
    handler = load_handler("on_upload").handler
    fc.deploy(FUNCTION, runs=lambda event: handler(event, fc_context()))
    keys = bucket.images(12)

    status, _, _ = run_cli(capsys, *via_fc(bucket, "--batch", "5", "--qps", "1000"))
    fc.drain()

    assert status == 0 and fc.async_failures == []
    assert set(bucket.manifests()) == set(keys)
    assert submitted_keys(api) == dict.fromkeys(keys, 1)

    status, _, _ = run_cli(capsys, *via_fc(bucket, "--restart", "--qps", "1000"))
    fc.drain()
    assert status == 0 and submitted_keys(api) == dict.fromkeys(keys, 1)  # duplicates: nothing paid


def test_bad_input_sends_no_invocation(
    bucket: Bucket, fc: FcStandIn, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.images(2)
    assert run_cli(capsys, *via_fc(bucket, "--suffix", ".webp"))[0] == 2
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    status, _, err = run_cli(capsys, *via_fc(bucket))
    assert status == 2 and "ALIBABA_CLOUD_ACCESS_KEY_ID" in err
    assert fc.requests == []
    assert TEST_CREDENTIALS.access_key_secret not in err
