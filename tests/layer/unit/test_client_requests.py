"""What the clients send and how they read answers, with a stub session (no network at all)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from requests.structures import CaseInsensitiveDict

from segflow.client import (
    PICWISH_STATE_CODES,
    Endpoints,
    PicWishClient,
    VisionClient,
)
from segflow.errors import ApiConnectionError, ApiError, ConfigError, InputValidationError, UnknownActionError
from segflow.ratelimit import RateLimiter
from segflow.retry import RetryPolicy
from segflow.signing import Credentials

SECRET = "very-secret-key-material"
TOKEN = "sts-token-material"
CREDENTIALS = Credentials("LTAI-test", SECRET)
STS = Credentials("STS.test", SECRET, TOKEN)
RID = "REQ-1"


@dataclass
class StubResponse:
    status_code: int
    content: bytes
    headers: CaseInsensitiveDict[str] = field(default_factory=CaseInsensitiveDict)


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))


class StubSession:
    """Answers from a list (responses or exceptions to raise) and records what was sent."""

    def __init__(self, *answers: StubResponse | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[Sent] = []

    def request(self, method: str, url: str, **kwargs: Any) -> StubResponse:
        self.sent.append(Sent(method, url, dict(kwargs["headers"]), kwargs.get("data")))
        assert kwargs["allow_redirects"] is False
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def ok(data: Mapping[str, Any] | None = None, request_id: str = RID) -> StubResponse:
    document: dict[str, Any] = {"RequestId": request_id}
    if data is not None:
        document["Data"] = dict(data)
    return StubResponse(
        200, json.dumps(document).encode(), CaseInsensitiveDict({"content-type": "application/json"})
    )


def err(
    status: int, code: str, message: str = "m", request_id: str = RID, host_id: str = "host"
) -> StubResponse:
    body = json.dumps({"RequestId": request_id, "HostId": host_id, "Code": code, "Message": message}).encode()
    return StubResponse(status, body, CaseInsensitiveDict({"content-type": "application/json"}))


def no_sleep_retry(**kwargs: Any) -> RetryPolicy:
    return RetryPolicy(sleep=lambda _s: None, **kwargs)


def vision(session: StubSession, **kwargs: Any) -> VisionClient:
    kwargs.setdefault("credentials", CREDENTIALS)
    kwargs.setdefault("retry", no_sleep_retry())
    return VisionClient(session=session, rate_limiter=RateLimiter(1000), **kwargs)  # type: ignore[arg-type]


# --- endpoints ---------------------------------------------------------------------------------------


def test_default_endpoints_are_the_real_shanghai_hosts() -> None:
    endpoints = Endpoints()

    assert endpoints.for_product("imageseg") == "https://imageseg.cn-shanghai.aliyuncs.com"
    assert endpoints.for_product("videoseg") == "https://videoseg.cn-shanghai.aliyuncs.com"
    assert endpoints.for_product("picwish") == "https://picwish.market.alicloudapi.com"
    assert endpoints.is_alibaba()


def test_a_local_engine_endpoint_is_not_alibaba() -> None:
    local = "http://127.0.0.1:8780"

    assert not Endpoints(imageseg=local, videoseg=local).is_alibaba()
    assert not Endpoints(imageseg="https://imageseg.aliyuncs.com.evil.example").is_alibaba()


@pytest.mark.parametrize("url", ["imageseg.cn-shanghai.aliyuncs.com", "ftp://x", "http://"])
def test_endpoints_must_be_full_http_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="full http"):
        Endpoints(imageseg=url)


# --- v3 (default): like alibabacloud-tea-openapi's RPC do_request --------------------------------------


def test_v3_posts_business_params_in_the_query_and_signs_headers() -> None:
    session = StubSession(ok({"ImageURL": "http://out.png"}))

    result = vision(session).segment("SegmentCommonImage", "http://in/a b.png", {"ReturnForm": "mask"})

    sent = session.sent[0]
    assert sent.method == "POST"
    assert sent.url.startswith("https://imageseg.cn-shanghai.aliyuncs.com/?")
    assert sent.query == {"ImageURL": "http://in/a b.png", "ReturnForm": "mask", "Format": "JSON"}
    assert sent.headers["x-acs-action"] == "SegmentCommonImage"
    assert sent.headers["x-acs-version"] == "2019-12-30"
    assert sent.headers["host"] == "imageseg.cn-shanghai.aliyuncs.com"
    assert sent.headers["Authorization"].startswith("ACS3-HMAC-SHA256 Credential=LTAI-test,SignedHeaders=")
    assert sent.body is None
    assert result.image_url == "http://out.png"
    assert result.request_id == RID


def test_v3_with_sts_sends_the_token_header() -> None:
    session = StubSession(ok({}))

    vision(session, credentials=STS).call("SegmentBody", {"ImageURL": "http://in"})

    assert session.sent[0].headers["x-acs-security-token"] == TOKEN
    assert "SecurityToken" not in session.sent[0].query


def test_videoseg_actions_go_to_the_videoseg_endpoint_with_its_version() -> None:
    session = StubSession(ok(None, request_id="JOB-1"))

    result = vision(session).segment("SegmentGreenScreenVideo", "http://in/v.mp4")

    sent = session.sent[0]
    assert urlsplit(sent.url).netloc == "videoseg.cn-shanghai.aliyuncs.com"
    assert sent.headers["x-acs-version"] == "2020-03-20"
    assert sent.query["VideoURL"] == "http://in/v.mp4"  # SegmentGreenScreenVideo's upper-case spelling
    assert result.job_id == "JOB-1"


def test_async_segment_body_is_a_job_polled_on_imageseg() -> None:
    session = StubSession(
        ok(None, request_id="JOB-9"),
        ok({"JobId": "JOB-9", "Status": "PROCESS_SUCCESS", "Result": '{"ImageURL": "http://o.png"}'}),
    )
    client = vision(session)

    submitted = client.segment("SegmentBody", "http://in.png", {"Async": "true"})
    job = client.get_async_job_result(submitted.job_id or "", product="imageseg")

    poll = session.sent[1]
    assert submitted.job_id == "JOB-9"
    assert urlsplit(poll.url).netloc == "imageseg.cn-shanghai.aliyuncs.com"
    assert poll.headers["x-acs-action"] == "GetAsyncJobResult"
    assert poll.headers["x-acs-version"] == "2019-12-30"
    assert poll.query["JobId"] == "JOB-9"
    assert job.result_url() == "http://o.png"


def test_synchronous_segment_body_has_no_job() -> None:
    session = StubSession(ok({"ImageURL": "http://o.png"}))

    assert vision(session).segment("SegmentBody", "http://in.png", {"Async": "false"}).job_id is None


def test_get_async_job_result_defaults_to_videoseg() -> None:
    session = StubSession(ok({"JobId": "J", "Status": "QUEUING"}))

    job = vision(session).get_async_job_result("J")

    assert urlsplit(session.sent[0].url).netloc == "videoseg.cn-shanghai.aliyuncs.com"
    assert job.is_pending


def test_custom_endpoint_with_a_path_is_signed_with_that_path() -> None:
    session = StubSession(ok({}))
    endpoints = Endpoints(imageseg="http://127.0.0.1:8780/api/")

    vision(session, endpoints=endpoints).call("SegmentHair", {"ImageURL": "http://in"})

    assert session.sent[0].url.startswith("http://127.0.0.1:8780/api?")
    assert session.sent[0].headers["host"] == "127.0.0.1:8780"


# --- v1 --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v1_signs_every_parameter_in_the_query(method: str) -> None:
    session = StubSession(ok({}))

    vision(session, credentials=STS, signature_version="v1", v1_method=method).call(
        "SegmentHead", {"ImageURL": "http://in/*~.png"}
    )

    sent = session.sent[0]
    assert sent.method == method
    assert sent.query["Action"] == "SegmentHead"
    assert sent.query["Version"] == "2019-12-30"
    assert sent.query["Format"] == "JSON"
    assert sent.query["SignatureMethod"] == "HMAC-SHA1"
    assert sent.query["SignatureVersion"] == "1.0"
    assert sent.query["SecurityToken"] == TOKEN
    assert sent.query["ImageURL"] == "http://in/*~.png"
    assert "Authorization" not in sent.headers


def test_every_attempt_is_signed_afresh() -> None:
    session = StubSession(err(400, "Throttling.User"), ok({}))

    vision(session, signature_version="v1").call("SegmentFace", {"ImageURL": "http://in"})

    nonces = [s.query["SignatureNonce"] for s in session.sent]
    assert len(nonces) == 2 and nonces[0] != nonces[1]


def test_credentials_callable_is_asked_on_every_attempt() -> None:
    asked: list[int] = []

    def fresh() -> Credentials:
        asked.append(1)
        return Credentials(f"key-{len(asked)}", SECRET)

    session = StubSession(err(503, "ServiceUnavailable"), ok({}))
    vision(session, credentials=fresh).call("SegmentFace", {"ImageURL": "http://in"})

    assert [s.headers["Authorization"].split(",")[0].split("=")[1] for s in session.sent] == [
        "key-1",
        "key-2",
    ]


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"signature_version": "v2"}, "signature"), ({"v1_method": "PUT"}, "GET")]
)
def test_unknown_signature_settings_are_refused(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        VisionClient(CREDENTIALS, **kwargs)  # type: ignore[arg-type]


# --- parameters ----------------------------------------------------------------------------------------


def test_unknown_parameter_is_refused_before_any_request() -> None:
    session = StubSession()

    with pytest.raises(InputValidationError, match="ReturnFrom"):
        vision(session).segment("SegmentHead", "http://in", {"ReturnFrom": "mask"})

    assert session.sent == []


def test_refine_mask_needs_the_coarse_mask() -> None:
    session = StubSession(ok({"Elements": [{"ImageURL": "http://refined.png"}]}))
    client = vision(session)

    with pytest.raises(InputValidationError, match="MaskImageURL") as caught:
        client.segment("RefineMask", "http://in")
    result = client.segment("RefineMask", "http://in", {"MaskImageURL": "http://mask"})

    assert caught.value.code == "MissingParameter"
    assert session.sent[0].query["MaskImageURL"] == "http://mask"
    assert result.output_urls() == ("http://refined.png",)


def test_unknown_action_and_picwish_through_the_rpc_client_are_refused() -> None:
    client = vision(StubSession())

    with pytest.raises(UnknownActionError):
        client.call("SegmentSky", {})
    with pytest.raises(ConfigError, match="PicWishClient"):
        client.call("PicWish", {})
    with pytest.raises(ConfigError):
        client.segment("GetAsyncJobResult", "x")


# --- answers and errors ----------------------------------------------------------------------------------


def test_error_answer_is_raised_once_with_code_status_and_ids() -> None:
    session = StubSession(err(400, "InvalidImage.Resolution", "too big", "R-7", "imageseg.host"))

    with pytest.raises(ApiError) as caught:
        vision(session).segment("SegmentBody", "http://in")

    error = caught.value
    assert (error.code, error.http_status, error.request_id, error.host_id) == (
        "InvalidImage.Resolution",
        400,
        "R-7",
        "imageseg.host",
    )
    assert len(session.sent) == 1


def test_xml_error_answer_is_read_too() -> None:
    body = (
        b"<Error><RequestId>R-8</RequestId><HostId>h</HostId>"
        b"<Code>InvalidImage.URL</Code><Message>x</Message></Error>"
    )
    session = StubSession(
        StubResponse(400, body, CaseInsensitiveDict({"content-type": "text/xml;charset=utf-8"}))
    )

    with pytest.raises(ApiError) as caught:
        vision(session).segment("SegmentBody", "http://in")

    assert (caught.value.code, caught.value.request_id) == ("InvalidImage.URL", "R-8")


def test_xml_success_answer_is_read_too() -> None:
    body = b"<SegmentBodyResponse><RequestId>R-9</RequestId><Data><ImageURL>http://o</ImageURL></Data></SegmentBodyResponse>"
    session = StubSession(StubResponse(200, body, CaseInsensitiveDict({"content-type": "text/xml"})))

    result = vision(session).segment("SegmentBody", "http://in")

    assert (result.request_id, result.image_url) == ("R-9", "http://o")


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (StubResponse(502, b"<html>bad gateway</html>"), "InternalError"),
        (StubResponse(200, b"not json"), "InvalidResponse"),
        (StubResponse(200, b'{"Data": {}}'), "InvalidResponse"),  # no RequestId
        (StubResponse(302, b""), "InvalidResponse"),
        (
            StubResponse(200, b'{"RequestId": "R", "Code": "Throttling.User", "Message": "m"}'),
            "Throttling.User",
        ),
    ],
)
def test_unexpected_answers_become_api_errors(response: StubResponse, code: str) -> None:
    session = StubSession(response, response, response, response)

    with pytest.raises(ApiError) as caught:
        vision(session, retry=no_sleep_retry(max_attempts=1)).call("SegmentBody", {"ImageURL": "http://in"})

    assert caught.value.code == code


def test_connection_failures_are_retried_then_raised_as_connection_errors() -> None:
    url_with_secret = f"https://imageseg/?Signature={SECRET}"
    session = StubSession(
        requests.ConnectionError(f"reset talking to {url_with_secret}"),
        requests.ReadTimeout(f"timed out: {url_with_secret}"),
    )

    with pytest.raises(ApiConnectionError) as caught:
        vision(session, retry=no_sleep_retry(max_attempts=2)).call("SegmentBody", {"ImageURL": "http://in"})

    assert caught.value.code == "ConnectionTimeout"
    assert len(session.sent) == 2
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_every_attempt_takes_a_rate_limit_token() -> None:
    taken: list[int] = []

    class CountingLimiter(RateLimiter):
        def acquire(self) -> None:
            taken.append(1)

    session = StubSession(err(429, "Throttling.User"), err(500, "InternalError"), ok({}))
    client = VisionClient(
        CREDENTIALS,
        session=session,  # type: ignore[arg-type]
        rate_limiter=CountingLimiter(2),
        retry=no_sleep_retry(),
    )

    client.call("SegmentBody", {"ImageURL": "http://in"})

    assert len(taken) == 3


def test_clients_share_one_process_limiter_per_product_by_default() -> None:
    first, second = VisionClient(CREDENTIALS), VisionClient(STS)

    assert first.rate_limiter_for("imageseg") is second.rate_limiter_for("imageseg")
    assert first.rate_limiter_for("imageseg") is RateLimiter.shared(2.0, key="imageseg")
    assert first.rate_limiter_for("videoseg") is not first.rate_limiter_for("imageseg")
    assert first.rate_limiter_for("videoseg").qps == 2.0
    assert PicWishClient("code").rate_limiter is RateLimiter.shared(2.0, key="picwish")


def test_a_given_limiter_is_used_for_every_product() -> None:
    limiter = RateLimiter(3)
    client = VisionClient(CREDENTIALS, rate_limiter=limiter)

    assert client.rate_limiter_for("imageseg") is client.rate_limiter_for("videoseg") is limiter


def test_boolean_parameters_are_sent_in_lower_case() -> None:
    session = StubSession(ok(None, request_id="JOB-B"))

    result = vision(session).segment("SegmentBody", "http://in.png", {"Async": True})  # type: ignore[dict-item]

    assert session.sent[0].query["Async"] == "true"
    assert result.job_id == "JOB-B"


# --- secrets -------------------------------------------------------------------------------------------


def test_no_secret_signature_or_token_in_logs_or_error_text(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    session = StubSession(err(503, "ServiceUnavailable"), err(400, "InvalidImage.Download", "cannot fetch"))

    with pytest.raises(ApiError) as caught:
        vision(session, credentials=STS, signature_version="v1").call(
            "SegmentBody", {"ImageURL": "http://in"}
        )

    signatures = [s.query["Signature"] for s in session.sent]
    texts = [caplog.text, str(caught.value), repr(caught.value), json.dumps(caught.value.to_record())]
    for text in texts:
        for secret in [SECRET, TOKEN, *signatures]:
            assert secret not in text
    assert "ServiceUnavailable" in caplog.text  # the retry was logged, just without secrets
    assert str(caught.value) == f"InvalidImage.Download: cannot fetch (HTTP 400) [RequestId {RID}]"


def test_urllib3_request_lines_have_signature_and_token_blanked(caplog: pytest.LogCaptureFixture) -> None:
    VisionClient(CREDENTIALS)  # installs the filter
    caplog.set_level(logging.DEBUG, logger="urllib3.connectionpool")

    logging.getLogger("urllib3.connectionpool").debug(
        '%s://%s:%s "%s %s %s" %s %s',
        "https",
        "imageseg",
        443,
        "GET",
        f"/?Action=SegmentBody&SecurityToken={TOKEN}&Signature=abc%2Bdef%3D",
        "HTTP/1.1",
        200,
        10,
    )

    assert TOKEN not in caplog.text
    assert "abc%2Bdef" not in caplog.text
    assert "Signature=<redacted>" in caplog.text
    assert "Action=SegmentBody" in caplog.text


# --- PicWish (VISION-API.md §4) ----------------------------------------------------------------------------


def picwish_answer(
    state: int, *, status: int = 200, image: str = "http://img", mask: str | None = None
) -> StubResponse:
    data: dict[str, Any] = {"state": state, "task_id": "T-1"}
    if state == 1:
        data["image"] = image
        if mask:
            data["mask"] = mask
    body = json.dumps({"status": status, "message": "msg", "data": data}).encode()
    return StubResponse(status, body, CaseInsensitiveDict({"X-Ca-Request-Id": "CA-1"}))


def picwish(session: StubSession, **kwargs: Any) -> PicWishClient:
    kwargs.setdefault("retry", no_sleep_retry())
    return PicWishClient(
        "my-appcode",
        endpoint="http://127.0.0.1:9",
        session=session,  # type: ignore[arg-type]
        rate_limiter=RateLimiter(1000),
        **kwargs,
    )


def test_picwish_sends_appcode_and_form_fields() -> None:
    session = StubSession(picwish_answer(1, image="http://cut.png", mask="http://mask.png"))

    result = picwish(session).segment(
        "http://in/a.jpg", type="person", output_type=1, crop=1, format="jpg", bg_color="ffffff"
    )

    sent = session.sent[0]
    assert sent.method == "POST"
    assert sent.url == "http://127.0.0.1:9/tasks/visual/segmentation"
    assert sent.headers["Authorization"] == "APPCODE my-appcode"
    assert sent.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    assert dict(parse_qsl((sent.body or b"").decode())) == {
        "image_url": "http://in/a.jpg",
        "type": "person",
        "output_type": "1",
        "crop": "1",
        "format": "jpg",
        "bg_color": "ffffff",
    }
    assert (result.image_url, result.mask_url, result.request_id) == (
        "http://cut.png",
        "http://mask.png",
        "CA-1",
    )


def test_picwish_json_body() -> None:
    session = StubSession(picwish_answer(1))

    picwish(session, body_format="json").segment("http://in/a.jpg")

    assert session.sent[0].headers["Content-Type"].startswith("application/json")
    assert json.loads(session.sent[0].body or b"") == {
        "image_url": "http://in/a.jpg",
        "output_type": 2,
        "crop": 0,
        "format": "png",
    }


@pytest.mark.parametrize(
    ("state", "code"),
    [
        (-8, "PicWish.Timeout"),
        (-7, "PicWish.InvalidImage"),
        (-5, "PicWish.TooLarge"),
        (-3, "PicWish.DownloadFailed"),
        (-2, "PicWish.UploadFailed"),
        (-1, "PicWish.Failed"),
        (0, "PicWish.Unfinished"),
    ],
)
def test_picwish_http_200_is_success_only_with_state_1(state: int, code: str) -> None:
    session = StubSession(picwish_answer(state))

    with pytest.raises(ApiError) as caught:
        picwish(session).segment("http://in")

    assert caught.value.code == code
    assert caught.value.request_id == "CA-1"
    assert len(session.sent) == 1  # a failed cutout is not retried
    assert set(PICWISH_STATE_CODES) == {-8, -7, -5, -3, -2, -1}


@pytest.mark.parametrize(
    ("status", "code", "attempts"),
    [
        (400, "PicWish.InvalidParameter", 1),
        (401, "PicWish.Unauthorized", 1),
        (404, "PicWish.NotFound", 1),
        (413, "PicWish.TooLarge", 1),
        (429, "PicWish.Throttling", 3),  # over its 2 QPS: retried
        (500, "PicWish.InternalError", 3),
    ],
)
def test_picwish_http_errors_map_to_codes(status: int, code: str, attempts: int) -> None:
    answer = StubResponse(status, json.dumps({"status": status, "message": "no"}).encode())
    session = StubSession(answer, answer, answer)

    with pytest.raises(ApiError) as caught:
        picwish(session, retry=no_sleep_retry(max_attempts=3)).segment("http://in")

    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert len(session.sent) == attempts


def test_picwish_error_status_inside_a_200_answer_counts() -> None:
    answer = StubResponse(200, json.dumps({"status": 401, "message": "bad appcode"}).encode())

    with pytest.raises(ApiError) as caught:
        picwish(StubSession(answer)).segment("http://in")

    assert caught.value.code == "PicWish.Unauthorized"


def test_picwish_429_then_success_is_retried() -> None:
    throttled = StubResponse(429, b'{"status": 429, "message": "qps"}')
    session = StubSession(throttled, picwish_answer(1, image="http://cut.png"))

    assert picwish(session).segment("http://in").image_url == "http://cut.png"
    assert len(session.sent) == 2


def test_picwish_appcode_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer = StubResponse(500, b"{}")
    session = StubSession(answer, answer)

    client = picwish(session, retry=no_sleep_retry(max_attempts=2))
    with pytest.raises(ApiError) as caught:
        client.segment("http://in")

    for text in (caplog.text, str(caught.value), repr(client)):
        assert "my-appcode" not in text


def test_picwish_needs_an_appcode() -> None:
    with pytest.raises(ConfigError, match="SEGFLOW_PICWISH_APPCODE"):
        PicWishClient("")
