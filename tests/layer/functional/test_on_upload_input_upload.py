"""The upload input path end to end (SEGFLOW_INPUT_URL=upload, the default on a real deployment).

GIVEN a local bucket, the fake imageseg/videoseg (signatures checked; it fetches every input URL as the
service would) answering AuthorizeFileUpload with the engine's temporary bucket on its own loopback port
(PostObject checked as OSS documents it: see segflow_engine.tempstore)
WHEN  the handlers run OSS events
THEN  each input is authorized, POSTed and handed over as the temporary object's URL, which the service
      fetches; PicWish still gets a presigned URL; a refused authorization or a refused/expired upload
      ends as one failure record carrying the code, and the paid action is never called (nor twice).

What the refusals encode: a RAM denial of an RPC call is HTTP 403 (the gateway's `Forbidden.RAM`; the
code for AuthorizeFileUpload is not documented separately); an expired PostObject policy is 403
`AccessDenied` "Invalid according to Policy: Policy expired." (OSS, PostObject common errors).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests

from segflow.errors import ApiError
from tests.conftest import load_event
from tests.support.fake_api import Reply, new_request_id
from tests.support.services_harness import Harness, jpeg, mp4, oss_event
from tests.support.temp_bucket import TempBucketServer

TIMER = json.dumps(load_event("timer.json")).encode()
TEMP_PREFIX = "/viapi-customer-temp/"


@pytest.fixture
def temp() -> TempBucketServer:
    return TempBucketServer.shared()


@pytest.fixture
def up(make: Any) -> Harness:
    built: Harness = make(input_url="upload")
    return built


def _temp_url(temp: TempBucketServer) -> str:
    return f"http://{temp.bucket.endpoint}{TEMP_PREFIX}"


def _grant_reply(temp: TempBucketServer, **overrides: Any) -> Reply:
    return Reply.json({"RequestId": new_request_id(), **temp.bucket.grant("imageseg", **overrides)})


def test_an_image_is_authorized_posted_and_fetched_from_the_temporary_bucket(
    up: Harness, temp: TempBucketServer
) -> None:
    event = load_event("oss-put-image.json")
    (key,) = up.stage(event)
    posts = len(temp.posts)

    assert up.on_upload(event)["done"] == 1

    (authorize,) = up.api.requests_for("AuthorizeFileUpload")
    assert (authorize.method, authorize.signature_error) == ("GET", None)
    assert (authorize.query["Product"], authorize.query["RegionId"]) == ("imageseg", "cn-shanghai")
    (call,) = up.api.requests_for("SegmentCommonImage")
    url = call.params["ImageURL"]
    assert url.startswith(_temp_url(temp)) and up.vision.fetched == [url]
    assert requests.get(url, timeout=10).content == up.storage.get_bytes(key)
    assert temp.posts[posts:] == [(201, "")]
    assert [r.action for r in up.api.requests] == ["AuthorizeFileUpload", "SegmentCommonImage"]
    assert up.results_for(key) == [f"segmented/{key}/SegmentCommonImage/manifest.json"]


def test_a_video_is_uploaded_submitted_and_collected(up: Harness, temp: TempBucketServer) -> None:
    event = load_event("oss-put-video.json")
    (key,) = up.stage(event)
    up.vision.job_statuses = []

    assert up.on_upload(event)["submitted"] == 1
    assert up.collect(payload=TIMER)["done"] == 1

    (authorize,) = up.api.requests_for("AuthorizeFileUpload")
    assert authorize.query["Product"] == "videoseg"
    (call,) = up.api.requests_for("SegmentVideoBody")
    assert call.params["VideoUrl"].startswith(_temp_url(temp))
    assert up.vision.fetched == [call.params["VideoUrl"]]
    prefix = f"segmented/{key}/SegmentVideoBody/"
    assert up.storage.get_bytes(prefix + "mask.mp4") == up.storage.get_bytes(key)  # the fake echoes the input


def test_a_resubmitted_job_is_uploaded_again_with_a_fresh_grant(up: Harness) -> None:
    key = "incoming/videos/limit.mp4"
    up.put(key, mp4())
    up.vision.job_statuses = ["LIMIT_RETRY_FAILED"]
    assert up.on_upload(oss_event(key))["submitted"] == 1
    up.vision.job_statuses = []

    assert up.collect(payload=TIMER)["resubmitted"] == 1
    assert up.collect(payload=TIMER)["done"] == 1

    assert up.api.count("AuthorizeFileUpload") == 2
    first, second = (r.params["VideoUrl"] for r in up.api.requests_for("SegmentVideoBody"))
    assert first != second and up.vision.fetched == [first, second]


def test_picwish_always_gets_a_presigned_url(make: Any) -> None:
    """AuthorizeFileUpload grants uploads for the vision platform's products; PicWish is a Marketplace API."""
    h: Harness = make(input_url="upload", rules=({"action": "PicWish"},))
    key = "incoming/products/mug.jpg"
    h.put(key, jpeg((200, 150)))

    assert h.on_upload(oss_event(key))["done"] == 1

    assert h.api.count("AuthorizeFileUpload") == 0
    (call,) = h.api.requests_for("PicWish")
    assert "Signature=" in call.params["image_url"] and TEMP_PREFIX not in call.params["image_url"]


def test_a_refused_authorization_is_a_deployment_fault_and_nothing_is_paid(
    up: Harness, temp: TempBucketServer
) -> None:
    """A RAM denial of AuthorizeFileUpload is the deployment's fault: one failure record with the code that
    says so, nothing uploaded or paid, and the object is processed once the role is fixed."""
    key = "incoming/photos/denied.jpg"
    up.put(key, jpeg())
    denied = Reply.error(403, "Forbidden.RAM", "User not authorized to operate on the specified resource.")
    up.api.queue("AuthorizeFileUpload", denied)
    posts = len(temp.posts)

    with pytest.raises(ApiError) as raised:  # raised, so FC delivers the event again
        up.on_upload(oss_event(key))
    assert raised.value.code == "Forbidden.RAM"

    failure = up.failure(key)
    assert failure is not None and (failure["Code"], failure["Action"]) == (
        "Forbidden.RAM",
        "SegmentCommonImage",
    )
    assert failure["Fault"] is True
    assert up.api.count("AuthorizeFileUpload") == 1 and up.api.count("SegmentCommonImage") == 0
    assert len(temp.posts) == posts and up.results_for(key) == []

    assert up.on_upload(oss_event(key))["done"] == 1  # the role was fixed: the redelivery goes through
    assert up.failure(key) is None and len(up.results_for(key)) == 1
    assert up.api.count("SegmentCommonImage") == 1


@pytest.mark.parametrize(
    ("grant", "status", "code"),
    [({"expires_in": -60}, 403, "AccessDenied"), ({"max_bytes": 100}, 400, "EntityTooLarge")],
)
def test_a_refused_upload_is_one_failure_record_and_nothing_is_paid(
    up: Harness, temp: TempBucketServer, grant: dict[str, Any], status: int, code: str
) -> None:
    key = "incoming/photos/refused.jpg"
    up.put(key, jpeg())
    up.api.queue("AuthorizeFileUpload", _grant_reply(temp, **grant))
    posts = len(temp.posts)

    assert up.on_upload(oss_event(key))["failed"] == 1

    failure = up.failure(key)
    assert failure is not None and failure["Code"] == code and "temporary bucket" in failure["Message"]
    assert temp.posts[posts:] == [(status, code)]
    assert up.api.count("SegmentCommonImage") == 0 and up.vision.fetched == []


def test_transient_failures_are_retried_and_the_action_is_paid_once(
    up: Harness, temp: TempBucketServer
) -> None:
    key = "incoming/photos/flaky.jpg"
    up.put(key, jpeg())
    up.api.queue("AuthorizeFileUpload", Reply.error(503, "ServiceUnavailable"))
    temp.fail_next(1, 503)
    posts = len(temp.posts)

    assert up.on_upload(oss_event(key))["done"] == 1

    assert up.api.count("AuthorizeFileUpload") == 2
    assert temp.posts[posts:] == [(503, "InternalError"), (201, "")]  # the object streamed again
    assert up.api.count("SegmentCommonImage") == 1


def test_an_upload_that_keeps_failing_is_left_to_fcs_retry_without_paying(
    up: Harness, temp: TempBucketServer
) -> None:
    key = "incoming/photos/outage.jpg"
    up.put(key, jpeg())
    temp.fail_next(4, 503)  # every attempt of the client's retry policy

    with pytest.raises(ApiError) as raised:
        up.on_upload(oss_event(key))
    assert raised.value.http_status == 503 and up.failure(key) is None
    assert up.api.count("SegmentCommonImage") == 0

    assert up.on_upload(oss_event(key))["done"] == 1  # FC's retry of the event, once OSS answers again
    assert up.api.count("SegmentCommonImage") == 1


def test_an_uploaded_input_may_come_from_a_bucket_in_any_region(make: Any) -> None:
    """The service reads the uploaded copy from its own bucket: the source bucket's region is no longer
    its concern (with presign it is: see test_on_upload_events, InvalidImage.Region)."""
    up: Harness = make(input_url="upload")
    key = "incoming/photos/beijing.jpg"
    up.put(key, jpeg())
    assert up.on_upload(oss_event(key, region="cn-beijing"))["done"] == 1

    presign: Harness = make(input_url="presign")
    other = "incoming/photos/beijing-presigned.jpg"
    presign.put(other, jpeg())
    assert presign.on_upload(oss_event(other, region="cn-beijing"))["failed"] == 1
    failure = presign.failure(other)
    assert failure is not None and failure["Code"] == "InvalidImage.Region"
