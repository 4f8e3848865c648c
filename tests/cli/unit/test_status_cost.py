"""`segflow status` over OSS (oss2 stubbed): what it counts, what it reads, what one status costs.

The bucket is the in-memory `oss2.Bucket` stub the storage tests use (tests/support/oss_stub.py): its
`list_objects_v2` pages as the OSS API reference documents ListObjectsV2 (at most `max-keys` keys a
page, 1000 at most, `IsTruncated` false on the last page, a continuation token to the next one), and its
calls are recorded, so the requests counted here are the requests oss2 would send. OSS answers a listing
of a missing bucket with 404 `NoSuchBucket` and a RAM denial with 403 `AccessDenied` (OSS API reference,
error codes); the stub raises the exceptions oss2 raises for those answers.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import oss2
import pytest
from pytest_mock import MockerFixture

from segflow.failure_records import FailureRecords
from segflow.layout import BucketLayout
from segflow.storage.base import Storage
from segflow.storage.oss import OssStorage
from segflow_cli.bucket_status import PAGE_SIZE, BucketStatus, gather_status
from segflow_cli.main import main
from tests.support.counting_storage import CountingStorage
from tests.support.oss_stub import FakeOssBucket, _oss_error, stub_oss

BUCKET = "segflow-demo"
ENDPOINT = "https://oss-cn-shanghai.aliyuncs.com"
LAYOUT = BucketLayout("segmented/", "segflow-jobs/", "segflow-failed/", "incoming/")


@pytest.fixture
def fake_buckets(mocker: MockerFixture) -> dict[str, FakeOssBucket]:
    return stub_oss(mocker)


@pytest.fixture
def storage(fake_buckets: dict[str, FakeOssBucket]) -> OssStorage:
    return OssStorage(BUCKET, ENDPOINT, oss2.Auth("LTAI-test-id", "test-secret"))


@pytest.fixture
def fake(storage: OssStorage, fake_buckets: dict[str, FakeOssBucket]) -> FakeOssBucket:
    return fake_buckets[BUCKET]


@pytest.fixture
def oss_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """`segflow status` on a user's machine: an AccessKey in the environment, no local bucket directory."""
    monkeypatch.delenv("SEGFLOW_LOCAL_BUCKET_DIR", raising=False)
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-test-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "test-secret")


def record_id(number: int) -> str:
    return f"{number:040x}"


def failure(number: int, *, code: str = "InvalidImage.Content", action: str = "SegmentCommonImage",
            fault: bool = False) -> dict[str, Any]:  # fmt: skip
    document: dict[str, Any] = {
        "Bucket": BUCKET, "Key": f"incoming/bad/{number}.jpg", "Action": action, "Code": code,
        "Message": f"object {number} cannot be decoded", "Time": "2026-11-22T01:00:00Z",
    }  # fmt: skip
    if fault:
        document.update(Fault=True, Retryable=True)
    return document


def fill(storage: OssStorage, *, done: int = 0, failures: int = 0, pending: int = 0, inflight: int = 0,
         deferred: int = 0, waiting: int = 0, superseded: int = 0) -> None:  # fmt: skip
    for number in range(done):
        storage.put_bytes(LAYOUT.done_key(record_id(number)), b"")
    for number in range(superseded):
        storage.put_bytes(LAYOUT.superseded_key(record_id(number)), b"")
    records = FailureRecords(storage, LAYOUT)
    for number in range(failures):
        records.write(failure(number))
    for number in range(pending):
        storage.put_bytes(LAYOUT.pending_key(record_id(number)), b"{}")
    for number in range(inflight):
        storage.put_bytes(LAYOUT.inflight_key(record_id(number)), b"{}")
    for number in range(deferred):
        storage.put_bytes(LAYOUT.deferred_key(record_id(number)), b"{}")
    for number in range(waiting):
        storage.put_bytes(LAYOUT.pair_key(record_id(number)), b"{}")
    heartbeat = {"At": "-", "Epoch": time.time(), "Owner": "collector-1"}
    storage.put_bytes(LAYOUT.heartbeat_key, json.dumps(heartbeat).encode())


def status_of(storage: Storage, *, now: float | None = None, failures: int = 10, stale_after: float = 180.0,
              stuck_after: float = 300.0) -> BucketStatus:  # fmt: skip
    """The status as the command gathers it by default (`--failures 10 --stale-after 180`, 300 s stall)."""
    when = time.time() if now is None else now
    return gather_status(
        storage, LAYOUT, now=when, failures=failures, stale_after=stale_after, stuck_after=stuck_after
    )


def set_last_modified(fake: FakeOssBucket, key: str, epoch: float) -> None:
    data, etag, _ = fake.objects[key]
    fake.objects[key] = (data, etag, int(epoch))


# -- what it costs ---------------------------------------------------------------------------------------

COST_CASES = [
    # done, failures, pending, submitting, deferred, waiting pairs, superseded, failures shown
    (0, 0, 0, 0, 0, 0, 0, 10),
    (2500, 1001, 3, 2, 1, 4, 2, 10),
    (1000, 5, 1000, 0, 0, 1001, 1001, 10),
    (1, 3, 0, 0, 0, 0, 0, 0),
]


@pytest.mark.parametrize("counts", COST_CASES, ids=lambda counts: "-".join(map(str, counts)))
def test_a_status_costs_one_listing_per_page_one_heartbeat_read_and_two_reads_per_failure_shown(
    storage: OssStorage, fake: FakeOssBucket, counts: tuple[int, ...]
) -> None:
    done, failures, pending, inflight, deferred, waiting, superseded, shown = counts
    fill(storage, done=done, failures=failures, pending=pending, inflight=inflight, deferred=deferred,
         waiting=waiting, superseded=superseded)  # fmt: skip
    fake.calls.clear()
    counting = CountingStorage(storage)

    status = status_of(counting, failures=shown)

    listed = (done, failures, pending, inflight, deferred, waiting, superseded)
    pages = sum(max(1, math.ceil(n / PAGE_SIZE)) for n in listed)
    reads = 1 + 2 * min(shown, failures)
    assert counting.requests == pages + reads
    assert (len(fake.calls_to("list_objects_v2")), len(fake.calls_to("get_object"))) == (pages, reads)
    assert counting.calls["list"] == 7 and counting.writes == 0, "one listing per prefix, nothing written"
    assert all(call["max_keys"] == PAGE_SIZE for call in fake.calls_to("list_objects_v2"))
    found = (status.done, status.total("failed"), status.pending.count, status.submitting.count,
             status.deferred.count, status.waiting.count, status.superseded)  # fmt: skip
    assert found == listed and len(status.recent) == min(shown, failures)


def test_status_reads_no_job_record_only_the_heartbeat_and_the_failures_it_shows(
    storage: OssStorage, fake: FakeOssBucket
) -> None:
    fill(storage, done=5, failures=4, pending=2, inflight=1)
    for number in range(5):
        storage.put_bytes(LAYOUT.record_key(record_id(number)), b"{}")  # the records stay unread
    counting = CountingStorage(storage)
    status_of(counting, failures=2)
    index, records = counting.reads[1::2], counting.reads[2::2]
    assert counting.reads[0] == LAYOUT.heartbeat_key
    assert all(key.startswith(LAYOUT.failure_index_prefix) for key in index)
    assert len(records) == 2 and all(key.startswith(LAYOUT.failed_prefix) for key in records)
    assert not any(key.startswith(LAYOUT.jobs_prefix + "records/") for key in counting.reads)


# -- what it counts --------------------------------------------------------------------------------------


def test_failures_are_counted_by_kind_code_and_action_from_the_index_alone(
    storage: OssStorage, fake: FakeOssBucket
) -> None:
    records = FailureRecords(storage, LAYOUT)
    for number in range(3):
        records.write(failure(number))
    records.write(failure(3, code="InvalidFile.Content", action="SegmentVideoBody"))
    records.write(failure(4, code="SignatureDoesNotMatch", fault=True))
    records.write(failure(5, code="SignatureDoesNotMatch", action="SegmentVideoBody", fault=True))
    fake.calls.clear()

    status = status_of(storage, failures=0)
    assert fake.calls_to("get_object") == [{"key": LAYOUT.heartbeat_key, "byte_range": None, "headers": {}}]
    shape = status.to_json()
    assert shape["failed"] == {"total": 4, "by_code": [
        {"code": "InvalidImage.Content", "action": "SegmentCommonImage", "count": 3},
        {"code": "InvalidFile.Content", "action": "SegmentVideoBody", "count": 1},
    ]}  # fmt: skip
    assert shape["faults"] == {"total": 2, "by_code": [
        {"code": "SignatureDoesNotMatch", "action": "SegmentCommonImage", "count": 1},
        {"code": "SignatureDoesNotMatch", "action": "SegmentVideoBody", "count": 1},
    ]}  # fmt: skip
    assert shape["problems"] == ["failed", "faults", "collector_silent"]


def test_the_failures_shown_are_the_newest_by_the_listing_date_with_their_reason(
    storage: OssStorage, fake: FakeOssBucket
) -> None:
    records = FailureRecords(storage, LAYOUT)
    now = time.time()
    ages = {0: 500, 1: 20, 2: 9000, 3: 60, 4: 5}  # seconds ago, by failure number
    for number, seconds in ages.items():
        records.write(failure(number, fault=number == 4))
        set_last_modified(fake, records.index_key(failure(number, fault=number == 4)), now - seconds)

    status = status_of(storage, now=now, failures=3)
    shown = status.to_json()["recent_failures"]
    assert [item["key"] for item in shown] == [
        "incoming/bad/4.jpg",
        "incoming/bad/1.jpg",
        "incoming/bad/3.jpg",
    ]
    assert shown[0] == {
        "key": "incoming/bad/4.jpg", "kind": "fault", "code": "InvalidImage.Content",
        "action": "SegmentCommonImage", "time": "2026-11-22T01:00:00Z",
        "message": "object 4 cannot be decoded", "record": "segflow-failed/incoming/bad/4.jpg.json",
    }  # fmt: skip


def test_the_oldest_pending_job_and_the_uploads_stuck_in_submitting_come_from_listing_dates(
    storage: OssStorage, fake: FakeOssBucket
) -> None:
    fill(storage, pending=3, inflight=3)
    now = time.time()
    for number, seconds in enumerate((30, 4000, 90)):
        set_last_modified(fake, LAYOUT.pending_key(record_id(number)), now - seconds)
    for number, seconds in enumerate((10, 301, 7200)):
        set_last_modified(fake, LAYOUT.inflight_key(record_id(number)), now - seconds)

    shape = status_of(storage, now=now, stuck_after=300).to_json()
    assert (shape["pending"]["count"], shape["pending"]["oldest_age_seconds"]) == (
        3,
        pytest.approx(4000, abs=1),
    )
    assert (shape["submitting"]["count"], shape["submitting"]["stuck"]) == (3, 2)
    assert "stuck_uploads" in shape["problems"]


@pytest.mark.parametrize(
    ("heartbeat", "age", "stale"),
    [
        ({"Epoch": -30}, 30, False),
        ({"Epoch": -600}, 600, True),
        ({"At": "2026-11-22T01:00:00Z", "Owner": "x"}, None, True),  # days ago: only At, parsed
        (None, None, True),  # the collector never ran over this bucket
        ("not json", None, True),
    ],
    ids=["fresh", "ten-minutes-old", "at-only", "missing", "unreadable"],
)
def test_the_collector_is_silent_when_its_heartbeat_is_older_than_stale_after_or_missing(
    storage: OssStorage, heartbeat: Any, age: float | None, stale: bool
) -> None:
    now = time.time()
    if isinstance(heartbeat, dict):
        body = {k: now + v if k == "Epoch" else v for k, v in heartbeat.items()}
        storage.put_bytes(LAYOUT.heartbeat_key, json.dumps(body).encode())
    elif isinstance(heartbeat, str):
        storage.put_bytes(LAYOUT.heartbeat_key, heartbeat.encode())
    status = status_of(storage, now=now, stale_after=180)
    assert status.collector_stale is stale
    assert ("collector_silent" in status.problems) is stale
    if age is not None:
        assert status.collector_age == pytest.approx(age, abs=0.01)
    if heartbeat == {"At": "2026-11-22T01:00:00Z", "Owner": "x"}:
        assert status.to_json()["collector"]["last_run"] == "2026-11-22T01:00:00Z"


# -- the command over OSS --------------------------------------------------------------------------------


def run_status(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["status", BUCKET, *args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("oss_env")
def test_the_command_reads_an_oss_bucket_with_the_accesskey_from_the_environment(
    storage: OssStorage, fake: FakeOssBucket, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(storage, done=3, failures=1, pending=1)
    code, out, _ = run_status(capsys, "--json")
    shape = json.loads(out)
    assert code == 0 and (shape["bucket"], shape["done"], shape["pending"]["count"]) == (BUCKET, 3, 1)
    assert shape["recent_failures"][0]["key"] == "incoming/bad/0.jpg"
    assert fake.endpoint == ENDPOINT and isinstance(fake.auth, oss2.Auth)


@pytest.mark.usefixtures("oss_env")
def test_fail_on_failures_exits_1_only_when_something_needs_a_person(
    storage: OssStorage, capsys: pytest.CaptureFixture[str]
) -> None:
    fill(storage, done=3)
    assert run_status(capsys, "--fail-on-failures")[0] == 0
    FailureRecords(storage, LAYOUT).write(failure(1))
    assert run_status(capsys)[0] == 0, "without the flag a status that was read exits 0"
    code, out, _ = run_status(capsys, "--fail-on-failures")
    assert code == 1 and "needs attention: final failures" in out


def denied(status: int, code: str, cls: type[oss2.exceptions.OssError]) -> Any:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _oss_error(cls, status, code)

    return refuse


@pytest.mark.usefixtures("oss_env")
@pytest.mark.parametrize(
    ("status", "code", "cls", "says"),
    [
        (404, "NoSuchBucket", oss2.exceptions.NoSuchBucket, "bucket 'segflow-demo' does not exist on OSS"),
        (
            403,
            "AccessDenied",
            oss2.exceptions.AccessDenied,
            "access to bucket 'segflow-demo' on OSS was refused",
        ),
    ],
    ids=["no-such-bucket", "access-denied"],
)
def test_a_bucket_oss_refuses_to_list_is_one_line_and_exit_2(
    fake: FakeOssBucket, capsys: pytest.CaptureFixture[str], status: int, code: str,
    cls: type[oss2.exceptions.OssError], says: str,
) -> None:  # fmt: skip
    fake.list_objects_v2 = denied(status, code, cls)  # type: ignore[method-assign]
    exit_code, out, err = run_status(capsys, "--json")
    assert exit_code == 2 and json.loads(out)["error"]["code"] == code  # --json: a JSON error on stdout
    assert err.count("\n") == 1 and err.startswith(f"segflow status: {says}")
    assert code in err and "Traceback" not in err


def test_no_accesskey_is_a_usage_error(
    fake_buckets: dict[str, FakeOssBucket],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in (
        "SEGFLOW_LOCAL_BUCKET_DIR",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    ):
        monkeypatch.delenv(name, raising=False)
    code, _, err = run_status(capsys)
    assert code == 2 and "ALIBABA_CLOUD_ACCESS_KEY_ID" in err and fake_buckets == {}
