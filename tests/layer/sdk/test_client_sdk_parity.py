"""Our v3 requests look like the official SDK 4.x's (VISION-API.md §1, "measured" note), both at the fake."""

from __future__ import annotations

import pytest

from segflow.client import VisionClient
from segflow.ratelimit import RateLimiter
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi, RecordedRequest, Reply

IMAGE_URL = "http://bucket.oss-cn-shanghai.aliyuncs.com/in/a b.png"


def _signed_headers(request: RecordedRequest) -> set[str]:
    authorization = request.headers["authorization"]
    signed = authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0]
    return set(signed.split(";"))


def _official_segment_head(api: FakeApi) -> RecordedRequest:
    models = pytest.importorskip("alibabacloud_imageseg20191230.models")
    sdk_client = pytest.importorskip("alibabacloud_imageseg20191230.client")
    openapi = pytest.importorskip("alibabacloud_tea_openapi.models")
    config = openapi.Config(
        access_key_id=TEST_CREDENTIALS.access_key_id,
        access_key_secret=TEST_CREDENTIALS.access_key_secret,
        endpoint=f"127.0.0.1:{api.port}",
        protocol="http",
        region_id="cn-shanghai",
    )
    api.queue("SegmentHead", Reply.ok({"Elements": [{"ImageURL": "http://o/sdk.png"}]}))
    response = sdk_client.Client(config).segment_head(
        models.SegmentHeadRequest(image_url=IMAGE_URL, return_form="mask")
    )
    assert response.body.data.elements[0].image_url == "http://o/sdk.png"
    return api.requests[-1]


def test_our_v3_request_has_the_official_sdk_shape(api: FakeApi) -> None:
    official = _official_segment_head(api)
    api.queue("SegmentHead", Reply.ok({"Elements": [{"ImageURL": "http://o/ours.png"}]}))
    client = VisionClient(TEST_CREDENTIALS, endpoints=api.endpoints(), rate_limiter=RateLimiter(1000))

    client.segment("SegmentHead", IMAGE_URL, {"ReturnForm": "mask"})
    ours = api.requests[-1]

    assert official.signature_error is None and ours.signature_error is None
    assert (ours.method, ours.path) == (official.method, official.path) == ("POST", "/")
    assert ours.body == official.body == b""
    # Same business parameters in the query; we add Format=JSON explicitly (the docs disagree on the default).
    assert set(ours.query) - {"Format"} == set(official.query) == {"ImageURL", "ReturnForm"}
    assert ours.query["ImageURL"] == official.query["ImageURL"] == IMAGE_URL
    for header in ("x-acs-action", "x-acs-version", "accept", "host"):
        assert ours.headers[header] == official.headers[header]
    # Every header the SDK signs, we sign too (the SDK's credentials-provider tag aside).
    assert _signed_headers(official) - {"x-acs-credentials-provider"} <= _signed_headers(ours)
