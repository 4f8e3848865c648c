"""on_upload under deployment faults, hostile keys and events, long keys and short deadlines.

- A deployment fault (a wrong AccessKey secret, an invalid PicWish AppCode) never becomes a permanent
  failure: the object stays retryable, the fault is in the logs and in a failure record marked `Fault`,
  and once the deployment is fixed a redelivery processes it (imageseg, videoseg, PicWish).
- Every check applies to the key that is actually read: a raw key that only looked URL-encoded is checked
  too, so segflow's own outputs never re-trigger it.
- Only `ObjectCreated:*` events are processed; an invalid bucket name fails only its own record.
- Derived keys that cannot fit are known before anything is paid for.
- An event with many records stops before the function's deadline; the rest is deferred, nothing lost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from segflow.client import PicWishClient, VisionClient
from segflow.deadline import Deadline
from segflow.errors import SegflowError
from segflow.events import object_created_event
from segflow.ratelimit import RateLimiter
from segflow.services.upload import process_upload_event
from segflow.signing import Credentials
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi
from tests.support.services_harness import (
    BUCKET,
    FAST_RETRY,
    Harness,
    ResultServer,
    fc_context,
    harness,
    jpeg,
    mp4,
    oss_event,
    oss_record,
)

WRONG = Credentials(TEST_CREDENTIALS.access_key_id, "a-secret-someone-mistyped")


def paid(api: FakeApi, action: str) -> int:
    """Calls of `action` the service accepted (a refused signature or AppCode is not billed)."""
    return sum(1 for r in api.requests_for(action) if r.signature_error is None)


# -- deployment faults ----------------------------------------------------------------------------------


def misconfigure(h: Harness, product: str) -> Any:
    """Break the deployment for `product`; returns the function that fixes it again."""
    good_vision, good_picwish = h.deps.vision, h.deps.picwish
    limiter = RateLimiter(1000.0, burst=100)
    if product == "picwish":
        h.api.appcode = "test-appcode"  # the Marketplace checks the AppCode (HTTP 401 otherwise)
        h.deps.picwish = PicWishClient(
            "an-appcode-from-another-account", endpoint=h.api.url, retry=FAST_RETRY
        )
    else:
        h.deps.vision = VisionClient(
            WRONG, endpoints=h.api.endpoints(), rate_limiter=limiter, retry=FAST_RETRY
        )

    def fix() -> None:
        h.deps.vision, h.deps.picwish = good_vision, good_picwish

    return fix


CASES = [
    ("imageseg", "incoming/fault/photo.jpg", "SegmentCommonImage", "SignatureDoesNotMatch", {}),
    ("videoseg", "incoming/fault/clip.mp4", "SegmentVideoBody", "SignatureDoesNotMatch", {}),
    (
        "picwish",
        "incoming/shop/item.jpg",
        "PicWish",
        "PicWish.Unauthorized",
        {"rules": ({"prefix": "incoming/shop/", "action": "PicWish"},)},
    ),
]


@pytest.mark.parametrize(("product", "key", "action", "code", "overrides"), CASES, ids=[c[0] for c in CASES])
def test_a_wrong_secret_is_a_fault_until_fixed_then_the_redelivery_processes_the_object(
    tmp_path: Path,
    api: FakeApi,
    results: ResultServer,
    caplog: pytest.LogCaptureFixture,
    product: str,
    key: str,
    action: str,
    code: str,
    overrides: dict[str, Any],
) -> None:
    h = harness(tmp_path / "buckets", api, results, **overrides)
    h.vision.job_statuses = []
    h.put(key, mp4() if key.endswith(".mp4") else jpeg((320, 240)))
    fix = misconfigure(h, product)

    caplog.set_level(logging.INFO)
    for _ in range(3):  # FC's retries of the event while the deployment is still wrong
        with pytest.raises(SegflowError) as raised:
            h.on_upload(oss_event(key))
        assert raised.value.code == code
        h.clock.advance(60)
    failure = h.failure(key)
    assert failure is not None and (failure["Code"], failure["Fault"], failure["Retryable"]) == (
        code,
        True,
        True,
    )
    assert any("deployment fault" in r.getMessage() and r.levelno >= logging.ERROR for r in caplog.records)
    assert paid(api, action) == 0 and h.results_for(key) == []

    fix()
    summary = h.on_upload(oss_event(key))  # a redelivery (or a redrive) once the secret is right
    if action == "SegmentVideoBody":
        assert summary["submitted"] == 1
        assert h.collect()["done"] == 1
    else:
        assert summary["done"] == 1
    assert len(h.results_for(key)) == 1 and h.failure(key) is None
    assert paid(api, action) == 1


def test_the_collector_redrive_processes_a_faulted_upload_once_fixed(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """After FC gave up on the event, the collector re-drives the record the fault left retryable."""
    h = harness(tmp_path / "buckets", api, results)
    key = "incoming/fault/late.jpg"
    h.put(key, jpeg((320, 240)))
    fix = misconfigure(h, "imageseg")
    for _ in range(4):  # the first delivery and FC's three retries, all refused
        with pytest.raises(SegflowError):
            h.on_upload(oss_event(key))
    fix()
    h.clock.advance(h.deps.stall_seconds + 1)
    assert h.collect()["redriven"] == 1
    assert len(h.results_for(key)) == 1 and h.failure(key) is None
    assert paid(api, "SegmentCommonImage") == 1


# -- the key that is read is the key that is checked -------------------------------------------------------


def test_a_raw_key_under_an_own_prefix_is_never_processed_even_when_its_decoding_is_an_input(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """With an output prefix that itself looks URL-encoded (`out%2Fput/`), the raw key of one of our results
    decodes to a key under the input prefix (`out/put/…`): the decoded key does not exist, the raw key is
    ours, so nothing is read, paid or written."""
    h = harness(tmp_path / "buckets", api, results, input_prefix="out/", output_prefix="out%2Fput/")
    ours = "out%2Fput/photo.jpg/SegmentCommonImage/cutout.png"
    h.put(ours, jpeg((64, 64)))
    summary = h.on_upload(oss_event(ours))
    assert (summary["skipped"], summary["outcomes"][0]["code"]) == (1, "OwnOutput")
    assert api.count() == 0 and h.keys("segflow-jobs/") == [] and h.keys("segflow-failed/") == []


def test_a_raw_key_that_merely_looked_encoded_is_still_processed_when_it_is_an_input(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    h = harness(tmp_path / "buckets", api, results)
    raw = "incoming/100%25 real.jpg"  # an encoder would have escaped the space: taken literally
    h.put(raw, jpeg((64, 64)))
    assert h.on_upload(oss_event(raw))["done"] == 1
    assert len(h.results_for(raw)) == 1


# -- events that must not lead to a call ---------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["ObjectRemoved:DeleteObject", "ObjectRemoved:DeleteObjects", "ObjectModified:Tag"]
)
def test_only_object_created_events_are_processed(
    tmp_path: Path, api: FakeApi, results: ResultServer, name: str
) -> None:
    h = harness(tmp_path / "buckets", api, results)
    key = "incoming/photos/removed.jpg"
    h.put(key, jpeg((64, 64)))
    record = oss_record(key)
    record["eventName"] = name
    summary = h.on_upload({"events": [record]})
    assert (summary["skipped"], summary["outcomes"][0]["code"]) == (1, "NotObjectCreated")
    assert api.count() == 0 and h.keys("segflow-jobs/") == []


def test_an_invalid_bucket_name_fails_only_its_own_record(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    h = harness(tmp_path / "buckets", api, results)
    keys = ["incoming/photos/a.jpg", "incoming/photos/b.jpg"]
    for key in keys:
        h.put(key, jpeg((64, 64)))
    bad = oss_record("incoming/photos/x.jpg", bucket="Not_A..Bucket")
    event = {"events": [oss_record(keys[0]), bad, oss_record(keys[1])]}
    summary = h.on_upload(event)
    assert (summary["done"], summary["skipped"]) == (2, 1)
    assert summary["outcomes"][1]["code"] == "InvalidBucketName"


def test_an_invalid_bucket_in_the_timer_payload_does_not_stop_the_others(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    h = harness(tmp_path / "buckets", api, results)
    h.vision.job_statuses = []
    key = "incoming/videos/clip.mp4"
    h.put(key, mp4())
    assert h.on_upload(oss_event(key))["submitted"] == 1
    payload = json.dumps({"payload": json.dumps({"buckets": ["No_Such..Bucket", BUCKET]})}).encode()
    summary = h.collect(payload=payload)
    assert summary["done"] == 1 and summary["errors"] == 1


# -- long keys -------------------------------------------------------------------------------------------


def test_a_key_whose_results_cannot_fit_fails_before_anything_is_paid(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """OSS keys hold up to 1023 bytes; `segmented/<key>/SegmentCommonImage/cutout.png` adds about 40 more.
    The failure record itself goes to the `_long/` form, which always fits."""
    h = harness(tmp_path / "buckets", api, results)
    key = "incoming/" + "/".join(["d" * 200] * 4) + "/" + "p" * 196 + ".jpg"
    assert 1003 < len(key.encode()) <= 1023  # too long even for `segflow-failed/<key>.json`
    h.put(key, jpeg((64, 64)))
    for _ in range(3):
        summary = h.on_upload(oss_event(key))
    assert summary["duplicate"] == 1
    assert paid(api, "SegmentCommonImage") == 0
    (failure_key,) = h.keys("segflow-failed/")
    assert failure_key.startswith("segflow-failed/_long/")
    failure = json.loads(h.storage.get_bytes(failure_key))
    assert (failure["Code"], failure["Key"]) == ("KeyTooLong", key)


# -- the deadline ----------------------------------------------------------------------------------------


def test_a_long_event_stops_before_the_deadline_and_nothing_is_lost_or_done_twice(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """Each record costs ~0.3 s here; with 4 s left and 2 s needed per record, the first records are done,
    the rest are deferred and the event is raised; the redelivery (or the collector) finishes them."""
    h = harness(tmp_path / "buckets", api, results, record_seconds=2.0)
    h.vision.segment_delay = 0.3
    keys = [f"incoming/many/photo-{i:02d}.jpg" for i in range(12)]
    for key in keys:
        h.put(key, jpeg((64, 64)))
    event = {"events": [oss_record(key) for key in keys]}
    with pytest.raises(SegflowError) as raised:
        process_upload_event(json.dumps(event).encode(), h.deps, Deadline(4.0))
    assert raised.value.code == "DeadlineNear"
    done_first = [k for k in keys if h.results_for(k)]
    deferred = h.keys(h.deps.layout.deferred_prefix)
    assert 0 < len(done_first) < len(keys) and len(deferred) == len(keys) - len(done_first)

    summary = h.on_upload(event)  # FC's redelivery, with its full timeout
    assert (summary["duplicate"], summary["done"]) == (len(done_first), len(keys) - len(done_first))
    h.clock.advance(h.deps.stall_seconds + 1)
    h.collect()  # the collector drops the deferred markers the redelivery made redundant
    assert h.keys(h.deps.layout.deferred_prefix) == []
    assert all(len(h.results_for(k)) == 1 for k in keys)
    assert paid(api, "SegmentCommonImage") == len(keys)


def test_deferred_records_are_processed_by_the_collector_when_no_redelivery_comes(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    h = harness(tmp_path / "buckets", api, results, record_seconds=60.0)
    keys = [f"incoming/many/late-{i}.jpg" for i in range(3)]
    for key in keys:
        h.put(key, jpeg((64, 64)))
    event = {"events": [oss_record(key) for key in keys]}
    with pytest.raises(SegflowError):
        h.on_upload(event, fc_context(timeout=30))  # 30 s of timeout, 60 s needed: all deferred
    assert len(h.keys(h.deps.layout.deferred_prefix)) == 3 and api.count() == 0
    assert h.collect()["redriven"] == 0  # FC's redelivery gets stall_seconds to come first
    h.clock.advance(h.deps.stall_seconds + 1)
    assert h.collect()["redriven"] == 3
    assert all(len(h.results_for(k)) == 1 for k in keys) and h.keys(h.deps.layout.deferred_prefix) == []


def test_the_event_builder_round_trips_any_key() -> None:
    for key in ("incoming/a b+c%25.jpg", "incoming/猫 咪.png", "incoming/plain.jpg"):
        from segflow.events import OssEvent

        event = object_created_event(BUCKET, key, etag="E" * 32, size=1, region="cn-shanghai")
        assert OssEvent.from_payload(event).records[0].key == key
