"""The clients over real HTTP against the loopback fake API (tests/support/fake_api.py)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from segflow.client import PicWishClient, VisionClient
from segflow.errors import ApiConnectionError, ApiError
from segflow.ratelimit import RateLimiter
from segflow.retry import RetryPolicy
from segflow.signing import Credentials
from tests.support.fake_api import TEST_CREDENTIALS, TEST_STS_CREDENTIALS, FakeApi, Reply

FAST_RETRY = RetryPolicy(base_delay=0.01, max_delay=0.05)


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi(appcode="test-appcode") as server:
        yield server


def client_for(api: FakeApi, **kwargs: Any) -> VisionClient:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("rate_limiter", RateLimiter(1000))
    credentials = kwargs.pop("credentials", TEST_CREDENTIALS)
    return VisionClient(credentials, endpoints=api.endpoints(), timeout=5.0, **kwargs)


# --- signatures the server accepts ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("signature_version", "v1_method", "credentials", "expected"),
    [
        ("v3", "POST", TEST_CREDENTIALS, "v3"),
        ("v3", "POST", TEST_STS_CREDENTIALS, "v3"),
        ("v1", "POST", TEST_CREDENTIALS, "1.0"),
        ("v1", "GET", TEST_STS_CREDENTIALS, "1.0"),
    ],
)
def test_requests_pass_server_side_signature_verification(
    api: FakeApi, signature_version: str, v1_method: str, credentials: Credentials, expected: str
) -> None:
    url = "https://bucket.oss-cn-shanghai.aliyuncs.com/in/a b+c*~%25/中文.png"
    api.queue("SegmentHead", Reply.ok({"Elements": [{"ImageURL": "http://o/1.png", "X": 3, "Y": 4}]}))
    client = client_for(
        api, signature_version=signature_version, v1_method=v1_method, credentials=credentials
    )

    result = client.segment("SegmentHead", url, {"ReturnForm": "mask"})

    (seen,) = api.requests
    assert seen.signature_error is None
    assert seen.signature_version == expected
    assert seen.method == ("POST" if signature_version == "v3" else v1_method)
    assert seen.params["ImageURL"] == url
    assert seen.params["ReturnForm"] == "mask"
    assert seen.params["Action"] == "SegmentHead"
    assert seen.params["Version"] == "2019-12-30"
    assert seen.params["Format"] == "JSON"
    assert result.elements[0].image_url == "http://o/1.png"
    assert (result.elements[0].x, result.elements[0].y) == (3, 4)


def test_wrong_secret_is_refused_by_the_server_and_not_retried(api: FakeApi) -> None:
    client = client_for(api, credentials=Credentials(TEST_CREDENTIALS.access_key_id, "wrong"))

    with pytest.raises(ApiError) as caught:
        client.segment("SegmentBody", "http://in.png")

    assert caught.value.code == "SignatureDoesNotMatch"
    assert caught.value.http_status == 400
    assert api.count() == 1


def test_unknown_access_key_is_refused_with_404(api: FakeApi) -> None:
    with pytest.raises(ApiError) as caught:
        client_for(api, credentials=Credentials("nobody", "x")).segment("SegmentBody", "http://in.png")

    assert (caught.value.code, caught.value.http_status) == ("InvalidAccessKeyId.NotFound", 404)


# --- retries --------------------------------------------------------------------------------------


def test_throttled_then_successful_call_is_retried_with_a_fresh_nonce(api: FakeApi) -> None:
    api.queue(
        "SegmentBody",
        Reply.error(429, "Throttling.User", "Request was denied due to user flow control."),
        Reply.ok({"ImageURL": "http://o/body.png"}),
    )

    result = client_for(api).segment("SegmentBody", "http://in.png")

    assert result.image_url == "http://o/body.png"
    seen = api.requests_for("SegmentBody")
    assert len(seen) == 2
    assert all(r.signature_error is None for r in seen)  # a reused nonce would be SignatureNonceUsed
    assert seen[0].headers["x-acs-signature-nonce"] != seen[1].headers["x-acs-signature-nonce"]


def test_invalid_image_resolution_is_raised_at_once_with_its_ids(api: FakeApi) -> None:
    # imageseg 400 InvalidImage.Resolution (VISION-API.md §2 error codes): fix the input, do not retry.
    api.queue(
        "SegmentBody",
        Reply.error(
            400, "InvalidImage.Resolution", "bad size", request_id="RID-400", host_id="imageseg.host"
        ),
    )

    with pytest.raises(ApiError) as caught:
        client_for(api).segment("SegmentBody", "http://in.png")

    error = caught.value
    assert (error.code, error.http_status, error.request_id, error.host_id) == (
        "InvalidImage.Resolution",
        400,
        "RID-400",
        "imageseg.host",
    )
    assert api.count() == 1


def test_connection_reset_is_retried(api: FakeApi) -> None:
    api.queue("SegmentCommonImage", Reply.connection_reset(), Reply.ok({"ImageURL": "http://o/c.png"}))

    result = client_for(api).segment("SegmentCommonImage", "http://in.png")

    assert result.image_url == "http://o/c.png"
    assert api.count("SegmentCommonImage") == 2


def test_persistent_resets_end_as_a_connection_error(api: FakeApi) -> None:
    api.queue("SegmentFace", *[Reply.connection_reset()] * 3)

    with pytest.raises(ApiConnectionError) as caught:
        client_for(api, retry=RetryPolicy(max_attempts=3, base_delay=0.01)).segment(
            "SegmentFace", "http://in"
        )

    assert caught.value.code == "ConnectionError"
    assert api.count("SegmentFace") == 3


def test_read_timeout_is_a_retryable_connection_error(api: FakeApi) -> None:
    api.queue(
        "SegmentHair", Reply.ok({}, delay=1.0), Reply.ok({"Elements": [{"ImageURL": "http://o/h.png"}]})
    )
    client = VisionClient(
        TEST_CREDENTIALS,
        endpoints=api.endpoints(),
        timeout=0.2,
        retry=FAST_RETRY,
        rate_limiter=RateLimiter(1000),
    )

    result = client.segment("SegmentHair", "http://in")

    assert result.output_urls() == ("http://o/h.png",)
    assert api.count("SegmentHair") == 2


def test_total_time_bound_is_honoured(api: FakeApi) -> None:
    api.set_handler(lambda _request: Reply.error(503, "ServiceUnavailable", delay=0.15))
    policy = RetryPolicy(max_attempts=50, base_delay=0.05, max_delay=0.1, max_total=0.6)
    client = client_for(api, retry=policy)

    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        client.segment("SegmentBody", "http://in.png")
    elapsed = time.monotonic() - started

    assert caught.value.code == "ServiceUnavailable"
    # Never starts a wait that would cross 0.6 s; the last attempt itself may take its 0.15 s.
    assert elapsed < 0.6 + 0.15 + 0.2
    assert 2 <= api.count() < 50


# --- answers --------------------------------------------------------------------------------------


def test_xml_answers_are_read_over_http(api: FakeApi) -> None:
    api.queue(
        "ParseFace",
        Reply.xml(
            "<ParseFaceResponse><RequestId>RID-X</RequestId><Data><OriginImageURL>http://o/f.png</OriginImageURL>"
            "<Elements><Name>skin</Name><ImageURL>http://o/skin.png</ImageURL></Elements>"
            "<Elements><Name>nose</Name><ImageURL>http://o/nose.png</ImageURL></Elements>"
            "</Data></ParseFaceResponse>"
        ),
    )

    result = client_for(api).segment("ParseFace", "http://in.png")

    assert result.request_id == "RID-X"
    assert result.origin_image_url == "http://o/f.png"
    assert [e.name for e in result.elements] == ["skin", "nose"]


def test_video_job_is_submitted_and_polled(api: FakeApi) -> None:
    api.queue("SegmentVideoBody", Reply.ok(None, request_id="JOB-V"))
    api.queue(
        "GetAsyncJobResult",
        Reply.ok({"JobId": "JOB-V", "Status": "PROCESSING"}),
        Reply.ok({"JobId": "JOB-V", "Status": "PROCESS_SUCCESS", "Result": '{"VideoUrl": "http://o/v.mp4"}'}),
    )
    client = client_for(api)

    submitted = client.segment("SegmentVideoBody", "http://in.mp4")
    first = client.get_async_job_result(submitted.job_id or "")
    second = client.get_async_job_result(submitted.job_id or "")

    assert submitted.job_id == "JOB-V"
    assert first.is_pending
    assert second.result_url() == "http://o/v.mp4"
    polls = api.requests_for("GetAsyncJobResult")
    assert [p.params["JobId"] for p in polls] == ["JOB-V", "JOB-V"]
    assert all(p.params["Version"] == "2020-03-20" for p in polls)


# --- the shared rate limiter, measured at the server ----------------------------------------------


def test_ten_threads_through_a_shared_5_qps_limiter_stay_under_it(api: FakeApi) -> None:
    qps, calls = 5.0, 15
    limiter_key = f"test-http-{id(api)}"
    work = list(range(calls))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def worker() -> None:
        # Each thread builds its own client: the limiter is shared through RateLimiter.shared.
        client = client_for(api, rate_limiter=RateLimiter.shared(qps, key=limiter_key))
        while True:
            with lock:
                if not work:
                    return
                work.pop()
            try:
                client.segment("SegmentCommodity", "http://in.png")
            except BaseException as error:  # pragma: no cover - reported below
                failures.append(error)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    elapsed = time.monotonic() - started

    assert failures == []
    assert api.count("SegmentCommodity") == calls
    # A token bucket of rate r and burst 1 admits at most 1 + r·T requests in any window T.
    assert api.max_requests_in_window(1.0) <= qps + 1
    assert api.requests_per_second() <= qps * 1.1  # slack for arrival jitter on a busy machine
    assert elapsed >= (calls - 1) / qps * 0.95
    assert elapsed < 10  # bounded: 15 calls at 5 QPS take about 2.8 s


# --- PicWish --------------------------------------------------------------------------------------


def picwish_for(api: FakeApi, appcode: str = "test-appcode", **kwargs: Any) -> PicWishClient:
    kwargs.setdefault("retry", FAST_RETRY)
    return PicWishClient(appcode, endpoint=api.url, rate_limiter=RateLimiter(1000), timeout=5.0, **kwargs)


@pytest.mark.parametrize("body_format", ["form", "json"])
def test_picwish_cutout_over_http(api: FakeApi, body_format: str) -> None:
    api.queue("PicWish", Reply.picwish(image="http://o/cut.png", mask="http://o/mask.png", request_id="CA-9"))

    result = picwish_for(api, body_format=body_format).segment(
        "http://in/a.jpg", type="person", output_type=1
    )

    (seen,) = api.requests
    assert seen.path == "/tasks/visual/segmentation"
    assert seen.headers["authorization"] == "APPCODE test-appcode"
    assert seen.params["image_url"] == "http://in/a.jpg"
    assert seen.params["type"] == "person"
    assert seen.params["output_type"] == "1"
    assert (result.image_url, result.mask_url, result.request_id) == (
        "http://o/cut.png",
        "http://o/mask.png",
        "CA-9",
    )


def test_picwish_429_then_success_is_retried(api: FakeApi) -> None:
    api.queue("PicWish", Reply.picwish(status=429, message="qps"), Reply.picwish(image="http://o/cut.png"))

    assert picwish_for(api).segment("http://in").image_url == "http://o/cut.png"
    assert api.count("PicWish") == 2


def test_picwish_invalid_image_state_is_raised_at_once(api: FakeApi) -> None:
    api.queue("PicWish", Reply.picwish(state=-7, message="invalid image"))

    with pytest.raises(ApiError) as caught:
        picwish_for(api).segment("http://in")

    assert caught.value.code == "PicWish.InvalidImage"
    assert api.count("PicWish") == 1


def test_picwish_wrong_appcode_is_unauthorized(api: FakeApi) -> None:
    with pytest.raises(ApiError) as caught:
        picwish_for(api, appcode="wrong").segment("http://in")

    assert (caught.value.code, caught.value.http_status) == ("PicWish.Unauthorized", 401)


# --- secrets --------------------------------------------------------------------------------------


def test_no_secret_token_or_signature_in_logs_or_errors_over_http(
    api: FakeApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.queue("SegmentBody", Reply.error(500, "InternalError"), Reply.error(400, "InvalidImage.Download"))
    client = client_for(api, signature_version="v1", credentials=TEST_STS_CREDENTIALS)

    with pytest.raises(ApiError) as caught:
        client.segment("SegmentBody", "http://in.png")

    signatures = [r.query["Signature"] for r in api.requests]
    secrets = [TEST_STS_CREDENTIALS.access_key_secret, TEST_STS_CREDENTIALS.security_token or "", *signatures]
    assert len(signatures) == 2
    assert "POST /?" in caplog.text  # urllib3 did log the request line ...
    for text in (caplog.text, str(caught.value), repr(caught.value)):
        for secret in secrets:
            assert secret not in text  # ... with the signature and token blanked out
