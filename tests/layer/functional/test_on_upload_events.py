"""on_upload driven with the sample events in events/ over loopback (issue 3, "Done when").

GIVEN a local bucket holding real images and videos at the events' keys, a fake imageseg/videoseg that
checks every request's signature and fetches the presigned input URL, WHEN the handler runs the event,
THEN every record ends as exactly one result (manifest) or one failure record, or is skipped on purpose.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from segflow.errors import ApiError, SegflowError
from tests.conftest import load_event
from tests.support.fake_api import FakeApi, Reply
from tests.support.services_harness import (
    BUCKET,
    Harness,
    event_keys,
    jpeg,
    oss_event,
)


def assert_signed(api: FakeApi) -> None:
    assert api.requests, "the fake API saw no request"
    assert all(
        r.signature_error is None and r.signature_version for r in api.requests if r.action != "PicWish"
    )


def test_single_image_event_stores_full_size_cutout_and_manifest(h: Harness) -> None:
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    summary = h.on_upload(event)
    assert (summary["records"], summary["done"]) == (1, 1)
    assert_signed(h.api)
    (call,) = h.api.requests_for("SegmentCommonImage")
    assert call.params["ImageURL"].startswith("http://127.0.0.1:")  # a presigned loopback URL, fetched
    assert h.vision.fetched == [call.params["ImageURL"]]
    prefix = f"segmented/{key}/SegmentCommonImage/"
    assert h.keys(prefix) == [prefix + "cutout.png", prefix + "manifest.json"]
    with Image.open(io.BytesIO(h.storage.get_bytes(prefix + "cutout.png"))) as cutout:
        assert (cutout.mode, cutout.size) == ("RGBA", (640, 480))
    manifest = h.manifest(key, "SegmentCommonImage")
    assert manifest["Action"] == "SegmentCommonImage"
    assert manifest["Source"] == {
        "Bucket": BUCKET,
        "Key": key,
        "ETag": h.storage.head(key).etag,
        "Size": h.storage.head(key).size,
    }
    assert isinstance(manifest["RequestId"], str) and len(manifest["RequestId"]) == 36
    assert manifest["CompletedAt"].endswith("Z")


def test_every_record_of_a_multi_record_event_is_processed(h: Harness) -> None:
    event = load_event("oss-multi-records.json")
    keys = h.stage(event)
    assert len(keys) == 3
    summary = h.on_upload(event)
    assert (summary["records"], summary["done"], summary["submitted"]) == (3, 2, 1)
    assert [o["key"] for o in summary["outcomes"]] == keys
    image_keys = [k for k in keys if not k.endswith(".mp4")]
    for key in image_keys:
        assert h.results_for(key) == [f"segmented/{key}/SegmentCommonImage/manifest.json"]
    (video,) = [k for k in keys if k.endswith(".mp4")]
    assert h.api.count("SegmentVideoBody") == 1
    assert h.keys("segflow-jobs/pending/") != []
    tick = h.collect(payload=json.dumps(load_event("timer.json")).encode())
    assert tick["claimed"] == 1
    while h.keys("segflow-jobs/pending/"):
        h.collect()
    assert h.results_for(video) == [f"segmented/{video}/SegmentVideoBody/manifest.json"]
    assert h.keys(f"segmented/{video}/SegmentVideoBody/") == [
        f"segmented/{video}/SegmentVideoBody/manifest.json",
        f"segmented/{video}/SegmentVideoBody/mask.mp4",
    ]


def test_url_encoded_chinese_and_spaced_keys_are_decoded_once(h: Harness) -> None:
    event = load_event("oss-key-encoded.json")
    keys = h.stage(event)
    assert keys == ["incoming/猫咪 照片.jpg", "incoming/人像 合照 (1).png", "incoming/a+b 100%.png"]
    summary = h.on_upload(event)
    assert summary["done"] == 3
    for key in keys:
        assert h.results_for(key) == [f"segmented/{key}/SegmentCommonImage/manifest.json"]
        assert h.manifest(key, "SegmentCommonImage")["Source"]["Key"] == key


def test_key_under_the_output_prefix_is_never_processed(h: Harness) -> None:
    event = load_event("oss-key-output-prefix.json")
    ((_, key),) = event_keys(event)
    h.put(key, jpeg())  # the object exists: only the prefix rule keeps it from looping
    before = h.keys()
    summary = h.on_upload(event)
    assert (summary["skipped"], summary["done"], summary["failed"]) == (1, 0, 0)
    assert summary["outcomes"][0]["code"] == "OwnOutput"
    assert h.api.requests == []
    assert h.keys() == before


def test_our_own_jobs_and_failure_prefixes_are_skipped_too(h: Harness) -> None:
    keys = ["segflow-jobs/work/abc.png", "segflow-failed/incoming/x.jpg.json"]
    for key in keys:
        h.put(key, jpeg())
    summary = h.on_upload(oss_event(*keys))
    assert summary["skipped"] == 2 and h.api.requests == []


def test_bucket_outside_shanghai_gets_the_region_failure_without_an_api_call(h: Harness) -> None:
    """Spec §1: inputs must be OSS in cn-shanghai, else `InvalidImage.Region` / `InvalidFile.Region`."""
    event = load_event("oss-non-shanghai.json")
    (key,) = h.stage(event)
    summary = h.on_upload(event)
    assert summary["failed"] == 1
    assert h.api.requests == []
    failure = h.failure(key)
    assert failure is not None
    assert (failure["Code"], failure["Action"], failure["Key"]) == (
        "InvalidImage.Region",
        "SegmentCommonImage",
        key,
    )
    assert h.results_for(key) == []


def test_video_outside_shanghai_uses_the_videoseg_code(h: Harness) -> None:
    key = "incoming/videos/far.mp4"
    event = oss_event(key, region="cn-beijing")
    h.stage(event)
    h.on_upload(event)
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InvalidFile.Region"


@pytest.mark.parametrize("name", ["oss-put-image.json", "oss-put-video.json"])
def test_duplicate_event_delivered_three_times_submits_once(h: Harness, name: str) -> None:
    event = load_event(name)
    h.stage(event)
    outcomes = [h.on_upload(event)["outcomes"][0]["outcome"] for _ in range(3)]
    assert outcomes[0] in ("done", "submitted")
    assert outcomes[1:] == ["duplicate", "duplicate"]
    submissions = [r for r in h.api.requests if r.action != "GetAsyncJobResult"]
    assert len(submissions) == 1
    assert len(h.keys("segflow-jobs/records/")) == 1


def test_one_event_carrying_the_same_record_three_times_submits_once(h: Harness) -> None:
    event = load_event("oss-put-image.json")
    h.stage(event)
    tripled = {"events": event["events"] * 3}
    summary = h.on_upload(tripled)
    assert (summary["done"], summary["duplicate"]) == (1, 2)
    assert h.api.count("SegmentCommonImage") == 1


def test_new_version_of_an_object_is_processed_again(h: Harness) -> None:
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    h.on_upload(event)
    h.put(key, jpeg((320, 200)))  # overwritten: new ETag
    assert h.on_upload(event)["done"] == 1
    assert h.api.count("SegmentCommonImage") == 2
    assert h.manifest(key, "SegmentCommonImage")["Source"]["ETag"] == h.storage.head(key).etag


def test_retryable_failure_raises_from_the_handler_and_the_retry_completes(h: Harness) -> None:
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    # More 5xx than the client's in-call attempts (FAST_RETRY: 4): the invocation must fail for FC to retry.
    h.api.queue("SegmentCommonImage", *[Reply.error(500, "InternalError.Algo")] * 4)
    with pytest.raises(ApiError) as raised:
        h.on_upload(event)
    assert raised.value.code == "InternalError.Algo"
    assert h.failure(key) is None and h.results_for(key) == []
    summary = h.on_upload(event)  # FC's retry of the same event
    assert summary["done"] == 1
    assert h.results_for(key) == [f"segmented/{key}/SegmentCommonImage/manifest.json"]
    assert h.failure(key) is None


def test_retryable_failure_of_one_record_does_not_stop_the_others(h: Harness) -> None:
    event = load_event("oss-multi-records.json")
    keys = h.stage(event)
    h.api.queue("SegmentCommonImage", *[Reply.error(503, "ServiceUnavailable")] * 4)
    with pytest.raises(ApiError):
        h.on_upload(event)
    assert len([k for k in keys if h.results_for(k)]) == 1  # the second image went through
    assert h.api.count("SegmentVideoBody") == 1
    summary = h.on_upload(event)
    assert (summary["done"], summary["duplicate"]) == (1, 2)
    assert h.api.count("SegmentVideoBody") == 1


def test_permanent_api_error_writes_one_failure_record_and_the_others_go_on(h: Harness) -> None:
    event = load_event("oss-multi-records.json")
    keys = h.stage(event)
    h.api.queue(
        "SegmentCommonImage", Reply.error(400, "InvalidImage.Content", "bad image", request_id="RID-1")
    )
    summary = h.on_upload(event)
    assert (summary["failed"], summary["done"], summary["submitted"]) == (1, 1, 1)
    failure = h.failure(keys[0])
    assert failure is not None
    assert (failure["Code"], failure["RequestId"], failure["Action"]) == (
        "InvalidImage.Content",
        "RID-1",
        "SegmentCommonImage",
    )
    assert failure["Time"].endswith("Z") and failure["Message"] == "bad image"
    assert h.results_for(keys[0]) == []
    assert h.on_upload(event)["duplicate"] == 3  # a failed object is not retried by a redelivery


def test_retries_exhausted_across_deliveries_end_as_a_failure_record(h: Harness) -> None:
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    h.api.queue("SegmentCommonImage", *[Reply.error(500, "InternalError")] * 100)
    for _ in range(h.deps.max_event_attempts - 1):
        with pytest.raises(ApiError):
            h.on_upload(event)
    summary = h.on_upload(event)  # the last delivery FC makes by default
    assert summary["failed"] == 1
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InternalError"


def test_unreadable_file_gets_the_service_code_without_an_api_call(h: Harness) -> None:
    key = "incoming/photos/not-an-image.jpg"
    h.put(key, b"this is plain text, not a JPEG" * 10)
    summary = h.on_upload(oss_event(key))
    assert summary["failed"] == 1 and h.api.requests == []
    failure = h.failure(key)
    assert failure is not None
    assert (failure["Code"], failure["Action"]) == ("InvalidImage.Content", "SegmentCommonImage")


def test_deleted_object_is_skipped(h: Harness) -> None:
    summary = h.on_upload(oss_event("incoming/photos/gone.jpg"))
    assert summary["skipped"] == 1 and summary["outcomes"][0]["code"] == "NoSuchKey"
    assert h.api.requests == []


def test_answer_without_a_result_url_is_a_failure_not_an_empty_result(h: Harness) -> None:
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    h.api.queue("SegmentCommonImage", Reply.ok({}, request_id="RID-EMPTY"))
    assert h.on_upload(event)["failed"] == 1
    failure = h.failure(key)
    assert failure is not None and (failure["Code"], failure["RequestId"]) == ("EmptyResult", "RID-EMPTY")
    assert h.results_for(key) == []


def test_element_action_that_finds_nothing_stores_an_empty_manifest(h: Harness) -> None:
    """SegmentHead answers `Elements: []` when there is no head: a result, not an error."""
    from segflow.routing import parse_rules

    h.deps.rules = parse_rules([{"action": "SegmentHead"}])
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    h.api.queue("SegmentHead", Reply.ok({"Elements": []}))
    assert h.on_upload(event)["done"] == 1
    assert h.manifest(key, "SegmentHead")["Elements"] == []


def test_signature_refusal_echoing_the_string_to_sign_is_not_stored(h: Harness) -> None:
    """imageseg's SignatureDoesNotMatch message carries its string-to-sign, STS token included: neither
    the failure record nor the error FC reports for the invocation (a deployment fault raises) keeps it."""
    event = load_event("oss-put-image.json")
    (key,) = h.stage(event)
    echo = "server string to sign is:POST&%2F&AccessKeyId%3DSTS.x%26SecurityToken%3DCAIS-secret-token-value"
    h.api.queue("SegmentCommonImage", Reply.error(400, "SignatureDoesNotMatch", echo))
    with pytest.raises(ApiError) as raised:
        h.on_upload(event)
    assert raised.value.code == "SignatureDoesNotMatch" and raised.value.__cause__ is None
    assert "secret-token-value" not in str(raised.value) and "string to sign is" not in str(raised.value)
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "SignatureDoesNotMatch"
    stored = "".join(h.storage.get_bytes(k).decode() for k in h.keys("segflow-") if k.endswith(".json"))
    assert "secret-token-value" not in stored and "string to sign is" not in stored
    assert "refused the request signature" in failure["Message"]


def test_an_unexpected_error_on_one_record_does_not_hide_the_others(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    event = load_event("oss-multi-records.json")
    keys = h.stage(event)
    storage = h.storage
    real_head = storage.head

    def head(key: str) -> Any:
        if key == keys[0]:
            raise OSError("File name too long")  # an adapter bug: not a StorageError
        return real_head(key)

    monkeypatch.setattr(storage, "head", head)
    with pytest.raises(SegflowError) as raised:
        h.on_upload(event)
    assert raised.value.code == "InternalError"
    assert [bool(h.results_for(k)) for k in keys[1:2]] == [True]
    assert h.api.count("SegmentVideoBody") == 1


def test_key_outside_the_input_prefix_is_skipped_even_if_the_trigger_sends_it(h: Harness) -> None:
    key = "uploads-elsewhere/photo.jpg"
    h.put(key, jpeg())
    summary = h.on_upload(oss_event(key))
    assert summary["skipped"] == 1 and summary["outcomes"][0]["code"] == "OutsideInputPrefix"
    assert h.api.requests == [] and h.keys("segflow-") == []


def test_server_side_copy_into_the_input_prefix_is_segmented_like_an_upload(h: Harness) -> None:
    """s.yaml subscribes oss:ObjectCreated:CopyObject: a copied object carries the same record fields."""
    event = load_event("oss-copy-object.json")
    assert [r["eventName"] for r in event["events"]] == ["ObjectCreated:CopyObject"]
    (key,) = h.stage(event)
    summary = h.on_upload(event)
    assert (summary["records"], summary["done"]) == (1, 1)
    assert h.results_for(key) == [f"segmented/{key}/SegmentCommonImage/manifest.json"]
    assert h.manifest(key, "SegmentCommonImage")["Source"]["Key"] == key
