"""A storage failure after a paid call never pays for the call again (Hardening → Faults, follow-up).

GIVEN an image (synchronous SegmentCommonImage) and a video (asynchronous SegmentVideoBody) uploaded to a
local bucket and a fake imageseg/videoseg on loopback, WHEN one of the writes that follow the paid call
(a result file, the manifest, the record's `done` or `submitted` state, the pending entry) fails with a
transient storage error — a few times, more often than the in-place retries allow, or on every delivery —
THEN the service is asked once, and every input ends with exactly one result or one failure record.

Storage retry delays are the harness's (1–5 ms), so the module runs in seconds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from segflow.errors import SegflowError, StorageError
from segflow.records import JobRecord
from segflow.services.deps import use_handler_deps
from segflow.storage.base import Storage
from tests.support.fake_api import FakeApi
from tests.support.services_harness import (
    FAST_STORAGE_RETRY,
    Harness,
    ResultServer,
    harness,
    jpeg,
    mp4,
    oss_event,
)
from tests.support.write_faults import WriteFaults

IMAGE_KEY = "incoming/paid/photo.jpg"
VIDEO_KEY = "incoming/paid/clip.mp4"
IMAGE_ACTION = "SegmentCommonImage"
VIDEO_ACTION = "SegmentVideoBody"
IN_PLACE_ATTEMPTS = FAST_STORAGE_RETRY.max_attempts
FC_DELIVERIES = 4  # FC's default for async invocations: the first one plus three retries


@pytest.fixture(autouse=True)
def _forget_deps() -> Iterator[None]:
    yield
    use_handler_deps(None)


# ------------------------------------------------------------------------------------ flaky storage

Match = Callable[[str, bytes | None], bool]


class FlakyWrites(WriteFaults):
    """The first `times` writes that `match` (description, body) fail with a transient StorageError
    (HTTP 503). A matching put_stream fails after its first chunk, mid-upload."""

    def __init__(self, inner: Storage, match: Match, times: int) -> None:
        super().__init__(inner)
        self.match = match
        self.times = times
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def should_fail(self, what: str, data: bytes | None) -> bool:
        with self._lock:
            if len(self.failed) < self.times and self.match(what, data):
                self.failed.append(what)
                return True
            return False

    def injected_error(self) -> StorageError:
        return StorageError("injected: OSS answered 503", code="ServiceUnavailable", http_status=503)


def flaky(h: Harness, match: Match, times: int) -> FlakyWrites:
    storage = FlakyWrites(h.storage, match, times)

    def storage_for(bucket: str, region: str | None = None) -> Storage:
        assert bucket == storage.bucket
        return storage

    h.deps.storage_for = storage_for
    return storage


# ------------------------------------------------------------------------------------ writes after the call


@dataclass(frozen=True)
class PaidWrite:
    """One write that follows a paid call, for the image or for the video."""

    name: str
    key: str
    action: str
    match: Callable[[Harness], Match]


def _starts(prefix: Callable[[Harness], str]) -> Callable[[Harness], Match]:
    return lambda h: lambda what, _data: what.startswith(prefix(h))


def _record_in(state: str) -> Callable[[Harness], Match]:
    def build(h: Harness) -> Match:
        records = f"put_bytes {h.deps.layout.jobs_prefix}records/"
        return lambda what, data: what.startswith(records) and f'"state": "{state}"'.encode() in (data or b"")

    return build


PAID_WRITES = [
    PaidWrite(
        "result-file",
        IMAGE_KEY,
        IMAGE_ACTION,
        _starts(lambda h: f"put_stream {h.deps.layout.result_prefix(IMAGE_KEY, IMAGE_ACTION)}cutout.png"),
    ),
    PaidWrite(
        "manifest",
        IMAGE_KEY,
        IMAGE_ACTION,
        _starts(lambda h: f"put_bytes {h.deps.layout.manifest_key(IMAGE_KEY, IMAGE_ACTION)}"),
    ),
    PaidWrite("record-done", IMAGE_KEY, IMAGE_ACTION, _record_in("done")),
    PaidWrite(
        "pending-entry",
        VIDEO_KEY,
        VIDEO_ACTION,
        _starts(lambda h: f"put_bytes {h.deps.layout.jobs_prefix}pending/"),
    ),
    PaidWrite("record-submitted", VIDEO_KEY, VIDEO_ACTION, _record_in("submitted")),
]


def scenario(tmp_path: Path, api: FakeApi, results: ResultServer, write: PaidWrite) -> Harness:
    h = harness(tmp_path / "buckets", api, results)
    h.vision.job_statuses = []  # an async job is finished at its first poll
    h.put(write.key, mp4() if write.key.endswith(".mp4") else jpeg((320, 240)))
    return h


def records(h: Harness) -> list[JobRecord]:
    prefix = f"{h.deps.layout.jobs_prefix}records/"
    return [JobRecord.from_json(h.storage.get_bytes(key)) for key in h.keys(prefix)]


def deliver_until_handled(h: Harness, key: str) -> int:
    """FC's side: deliver the event, again (a minute later) while the handler raises, at most
    FC_DELIVERIES times; then let the collector tick. Returns the number of deliveries."""
    deliveries = 0
    while deliveries < FC_DELIVERIES:
        deliveries += 1
        try:
            h.on_upload(oss_event(key))
            break
        except SegflowError:
            h.clock.advance(60)
    h.collect()
    return deliveries


def assert_one_result(h: Harness, key: str) -> None:
    assert len(h.results_for(key)) == 1
    assert h.failure(key) is None
    assert h.keys(f"{h.deps.layout.jobs_prefix}pending/") == []


# ------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize("times", [1, 2])
@pytest.mark.parametrize("write", PAID_WRITES, ids=lambda w: w.name)
def test_a_transient_write_failure_after_the_paid_call_is_retried_in_place(
    tmp_path: Path, api: FakeApi, results: ResultServer, write: PaidWrite, times: int
) -> None:
    h = scenario(tmp_path, api, results, write)
    storage = flaky(h, write.match(h), times)

    summary = h.on_upload(oss_event(write.key))  # no exception: FC has nothing to redeliver
    h.collect()

    assert len(storage.failed) == times
    assert summary["retry"] == 0
    assert api.count(write.action) == 1
    assert_one_result(h, write.key)


@pytest.mark.parametrize("write", PAID_WRITES, ids=lambda w: w.name)
def test_a_write_failing_past_the_in_place_retries_resumes_from_the_record_on_redelivery(
    tmp_path: Path, api: FakeApi, results: ResultServer, write: PaidWrite
) -> None:
    """The first delivery gives up after its in-place retries and hands the record back holding what the
    call returned; the redelivered event stores that instead of calling again."""
    h = scenario(tmp_path, api, results, write)
    storage = flaky(h, write.match(h), IN_PLACE_ATTEMPTS)

    with pytest.raises(StorageError):
        h.on_upload(oss_event(write.key))
    (kept,) = records(h)
    assert len(storage.failed) == IN_PLACE_ATTEMPTS
    assert kept.state == "submitting"
    if write.action == VIDEO_ACTION:
        assert kept.payload.job_id is not None
    elif write.name == "record-done":
        assert kept.payload.outputs  # the result is stored: only the record's `done` is left to write
    else:
        assert kept.payload.answer is not None and kept.payload.answer_expires_at is not None

    h.clock.advance(60)
    deliveries = deliver_until_handled(h, write.key)

    assert deliveries == 1
    assert api.count(write.action) == 1
    assert_one_result(h, write.key)
    (done,) = records(h)
    assert done.state == "done" and done.payload.answer is None


@pytest.mark.parametrize(
    ("write", "ends_as"),
    [
        (PAID_WRITES[0], "failure"),
        (PAID_WRITES[1], "failure"),
        # The result files and manifest are stored, only the record cannot say so: a result, not a failure.
        (PAID_WRITES[2], "result"),
        (PAID_WRITES[3], "failure"),
        # The pending entry is written before the record: the collector finishes the job anyway.
        (PAID_WRITES[4], "result"),
    ],
    ids=lambda v: v.name if isinstance(v, PaidWrite) else v,
)
def test_a_write_failing_on_every_delivery_still_ends_in_one_outcome_paid_once(
    tmp_path: Path, api: FakeApi, results: ResultServer, write: PaidWrite, ends_as: str
) -> None:
    """Storage refuses that write for good: each delivery resumes from the record (no new call), and
    the input ends with one result or, after FC's last delivery, one failure record."""
    h = scenario(tmp_path, api, results, write)
    flaky(h, write.match(h), times=1_000)

    deliver_until_handled(h, write.key)

    assert api.count(write.action) == 1
    failure = h.failure(write.key)
    if ends_as == "result":
        assert len(h.results_for(write.key)) == 1 and failure is None
        return
    assert failure is not None and failure["Code"] == "ServiceUnavailable"
    assert h.results_for(write.key) == []
    if write.action == VIDEO_ACTION:
        assert failure["JobId"] is not None  # the paid job is named, for whoever looks into it


def test_a_stored_result_whose_record_could_not_be_marked_done_is_finished_by_the_redrive(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """After FC's last delivery the record still says `submitting` but lists the stored files; once
    storage is back, the collector's re-drive marks it done without calling the service again."""
    write = next(w for w in PAID_WRITES if w.name == "record-done")
    h = scenario(tmp_path, api, results, write)
    storage = flaky(h, write.match(h), times=1_000)
    assert deliver_until_handled(h, write.key) == FC_DELIVERIES
    (stuck,) = records(h)
    assert stuck.state == "submitting" and stuck.payload.outputs

    storage.times = 0  # storage is healthy again
    h.clock.advance(h.deps.stall_seconds + 1)
    h.collect()

    (done,) = records(h)
    assert done.state == "done"
    assert api.count(IMAGE_ACTION) == 1
    assert_one_result(h, write.key)


def test_a_kept_answer_past_its_url_lifetime_is_asked_for_again(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """Synchronous result URLs live 30 minutes: a redelivery after that cannot use them and calls again
    (the only case where a storage failure costs a second call)."""
    write = next(w for w in PAID_WRITES if w.name == "manifest")
    h = scenario(tmp_path, api, results, write)
    flaky(h, write.match(h), IN_PLACE_ATTEMPTS)
    with pytest.raises(StorageError):
        h.on_upload(oss_event(write.key))

    h.clock.advance(1800)
    h.on_upload(oss_event(write.key))

    assert api.count(IMAGE_ACTION) == 2
    assert_one_result(h, write.key)


def test_a_transient_pending_write_after_a_resubmission_does_not_resubmit_again(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """The collector's resubmission (LIMIT_RETRY_FAILED) is paid too: its pending entry is retried in
    place, so the next tick polls the new job instead of finding the old one failed and paying again."""
    write = next(w for w in PAID_WRITES if w.name == "pending-entry")
    h = scenario(tmp_path, api, results, write)
    h.vision.job_statuses = ["LIMIT_RETRY_FAILED"]
    assert h.on_upload(oss_event(VIDEO_KEY))["submitted"] == 1
    h.vision.job_statuses = []
    storage = flaky(h, write.match(h), times=2)

    assert h.collect()["resubmitted"] == 1
    assert h.collect()["done"] == 1

    assert len(storage.failed) == 2
    assert api.count(VIDEO_ACTION) == 2  # the submission and one resubmission
    assert_one_result(h, VIDEO_KEY)
