"""The upload input path sends what the official SDK's `*_advance` methods send (issue: inputs that reach the
vision service on every account).

GIVEN the same file, and a transport that records every request and gives canned answers (the SDK's form
POST is hard-wired to HTTPS on `<Bucket>.<Endpoint>`, so no loopback server can stand in for OSS: both
clients' `requests.Session.send` is replaced instead)
WHEN  alibabacloud-imageseg20191230's `segment_common_image_advance` / alibabacloud-videoseg20200320's
      `segment_video_body_advance` hand it to the service, and segflow's on_upload service does the same
      for an OSS event of that file (SEGFLOW_INPUT_URL=upload, the default)
THEN  both send the same AuthorizeFileUpload query (and both sign it correctly), the same form fields in
      the same order with the same file part to the same URL, and call the action with the same URL.

The canned answers encode what is documented: AuthorizeFileUpload's top-level Bucket, Endpoint, ObjectKey,
AccessKeyId, EncodedPolicy, Signature, UseAccelerate (the SDK's own response handling); OSS PostObject
answers `success_action_status=201` with a `PostResponse` XML (OSS API reference, PostObject).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from segflow.client import VisionClient
from segflow.events import OssEvent
from segflow.ratelimit import RateLimiter
from segflow.retry import RetryPolicy
from segflow.services.deps import Deps
from segflow.services.upload import process_upload_event
from segflow.settings import Settings
from segflow.signing import Credentials
from segflow_cli.localbucket import LocalDirStorage
from segflow_engine.verify import NonceCache, verify_request
from tests.conftest import load_event
from tests.support.services_harness import jpeg, mp4, png

CREDENTIALS = Credentials("LTAI5tParityKeyId", "parity-key-secret")
TEMP_BUCKET = "viapi-customer-temp"
OSS_ENDPOINT = "oss-cn-shanghai.aliyuncs.com"
OBJECT_KEY = "1234567890123456/2026-11-27/parity-3f2a9c.bin"
GRANT = {
    "Bucket": TEMP_BUCKET,
    "Endpoint": OSS_ENDPOINT,
    "ObjectKey": OBJECT_KEY,
    "AccessKeyId": "LTAI5tTempUploadKey",
    "EncodedPolicy": "eyJleHBpcmF0aW9uIjoiMjAyNi0xMS0yN1QxMjowMDowMC4wMDBaIiwiY29uZGl0aW9ucyI6W119",
    "Signature": "c2lnbmF0dXJlLW9mLXRoZS1wb2xpY3k=",
    "UseAccelerate": False,
}
RESULT_URL = "http://viapi-cn-shanghai-dha-segmenter.oss-cn-shanghai.aliyuncs.com/result/cutout.png"


class Part(NamedTuple):
    name: str
    filename: str | None
    content_type: str | None
    value: bytes


@dataclass
class Sent:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    @property
    def params(self) -> dict[str, str]:
        """Query and form body together (the SDK sends some actions' parameters as a form)."""
        form = {}
        if self.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(self.body.decode(), keep_blank_values=True))
        return {**self.query, **form}


def _read_body(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, bytes | str):
        return body.encode() if isinstance(body, str) else body
    blocks = []
    while block := body.read(8192):  # as http.client reads a stream body
        blocks.append(block)
    return b"".join(blocks)


def _response(prepared: Any, status: int, body: bytes, content_type: str) -> requests.Response:
    """The answer as requests' own adapter builds it from a urllib3 response (streamed reads work too)."""
    from urllib3.response import HTTPResponse

    raw = HTTPResponse(
        body=io.BytesIO(body),
        headers={"Content-Type": content_type, "Content-Length": str(len(body))},
        status=status,
        preload_content=False,
    )
    return requests.adapters.HTTPAdapter().build_response(prepared, raw)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Sent]]:
    """Every request any client sends through requests, with canned answers by host."""
    sent: list[Sent] = []

    def send(session: requests.Session, prepared: Any, **kwargs: Any) -> requests.Response:
        record = Sent(
            prepared.method,
            prepared.url,
            {name.lower(): value for name, value in prepared.headers.items()},
            _read_body(prepared.body),
        )
        sent.append(record)
        if record.host == "openplatform.aliyuncs.com":
            answer = {"RequestId": "7A0B2D1C-AUTH", **GRANT}
            return _response(prepared, 200, json.dumps(answer).encode(), "application/json;charset=utf-8")
        if record.host == f"{TEMP_BUCKET}.{OSS_ENDPOINT}":
            xml = (
                f"<?xml version='1.0' encoding='UTF-8'?><PostResponse><Bucket>{TEMP_BUCKET}</Bucket>"
                f"<Location>http://{TEMP_BUCKET}.{OSS_ENDPOINT}/{OBJECT_KEY}</Location>"
                f'<Key>{OBJECT_KEY}</Key><ETag>"0CC175B9C0F1B6A831C399E269772661"</ETag></PostResponse>'
            )
            return _response(prepared, 201, xml.encode(), "application/xml")
        if prepared.url == RESULT_URL:
            return _response(prepared, 200, png((32, 24), "RGBA"), "image/png")
        action = record.headers.get("x-acs-action", "")
        data = {"ImageURL": RESULT_URL} if action == "SegmentCommonImage" else None
        answer = {"RequestId": "5C3A9E0F-ACTION", **({"Data": data} if data else {})}
        return _response(prepared, 200, json.dumps(answer).encode(), "application/json;charset=utf-8")

    monkeypatch.setattr(requests.Session, "send", send)
    yield sent


def _official(sdk: str, call: Callable[[Any, Any, Any], Any], data: bytes) -> None:
    client_module = pytest.importorskip(f"{sdk}.client")
    models = pytest.importorskip(f"{sdk}.models")
    openapi = pytest.importorskip("alibabacloud_tea_openapi.models")
    util = pytest.importorskip("alibabacloud_tea_util.models")
    product = "imageseg" if "imageseg" in sdk else "videoseg"
    config = openapi.Config(
        access_key_id=CREDENTIALS.access_key_id,
        access_key_secret=CREDENTIALS.access_key_secret,
        region_id="cn-shanghai",
        endpoint=f"{product}.cn-shanghai.aliyuncs.com",
    )
    call(client_module.Client(config), models, util.RuntimeOptions())


def _segflow(tmp_path: Path, event_name: str, data: bytes) -> dict[str, Any]:
    event = load_event(event_name)
    (record,) = OssEvent.from_payload(event)
    storage = LocalDirStorage(tmp_path / "buckets", record.bucket)
    storage.put_bytes(record.key, data)
    settings = Settings()  # the defaults: SEGFLOW_INPUT_URL=upload, the real endpoints
    assert settings.input_url == "upload"
    vision = VisionClient(
        CREDENTIALS,
        rate_limiter=RateLimiter(1000, burst=10),
        upload_rate_limiter=RateLimiter(1000, burst=10),
        retry=RetryPolicy(max_attempts=1),
    )
    deps = Deps(
        settings=settings,
        storage_for=lambda bucket, region=None: storage,
        vision=vision,
        http=requests.Session(),
        logger=logging.getLogger("test.parity"),
    )
    return process_upload_event(event, deps).to_dict()


def _multipart(sent: Sent) -> list[Part]:
    kind, _, boundary = sent.headers["content-type"].partition("; boundary=")
    assert kind == "multipart/form-data" and boundary
    delimiter = f"--{boundary}".encode()
    chunks = sent.body.split(delimiter)
    assert chunks[0] == b"" and chunks[-1] == b"--\r\n", "the body is delimited as RFC 7578 wants"
    parts = []
    for chunk in chunks[1:-1]:
        head, _, value = chunk[2:].partition(b"\r\n\r\n")
        assert value.endswith(b"\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = dict(item.split("=", 1) for item in headers["Content-Disposition"].split("; ")[1:])
        filename = disposition.get("filename")
        parts.append(
            Part(
                disposition["name"].strip('"'),
                filename.strip('"') if filename else None,
                headers.get("Content-Type"),
                value[:-2],
            )
        )
    return parts


def _signed_by(sent: Sent) -> str:
    verified = verify_request(
        sent.method,
        urlsplit(sent.url).path or "/",
        sent.query,
        sent.headers,
        sent.body,
        {CREDENTIALS.access_key_id: CREDENTIALS.access_key_secret}.get,
        nonces=NonceCache(),
    )
    return verified.access_key_id


def _compare(official: list[Sent], ours: list[Sent], data: bytes, url_param: str) -> None:
    (sdk_auth, sdk_post, sdk_call), (our_auth, our_post, our_call) = official, ours[:3]

    # AuthorizeFileUpload: the same GET on openplatform, the same query, both signed correctly.
    assert (our_auth.method, our_auth.host, urlsplit(our_auth.url).path) == ("GET", sdk_auth.host, "/")
    assert our_auth.query == sdk_auth.query
    for header in ("x-acs-action", "x-acs-version", "host", "accept"):
        assert our_auth.headers[header] == sdk_auth.headers[header], header
    assert _signed_by(our_auth) == _signed_by(sdk_auth) == CREDENTIALS.access_key_id

    # The form POST: same URL and Host, same fields in the same order, same file part.
    assert (our_post.method, our_post.url) == (sdk_post.method, sdk_post.url)
    assert our_post.url == f"https://{TEMP_BUCKET}.{OSS_ENDPOINT}/"
    assert our_post.headers.get("host", our_post.host) == sdk_post.headers["host"]
    assert _multipart(our_post) == _multipart(sdk_post)
    assert _multipart(our_post)[-1] == Part("file", OBJECT_KEY, "", data)
    assert int(our_post.headers["content-length"]) == len(our_post.body), "a length, not chunks"
    assert "transfer-encoding" not in our_post.headers

    # The action: called with the same URL of the uploaded object.
    assert our_call.headers["x-acs-action"] == sdk_call.headers["x-acs-action"]
    assert our_call.params[url_param] == sdk_call.params[url_param]
    assert our_call.params[url_param] == f"http://{TEMP_BUCKET}.{OSS_ENDPOINT}/{OBJECT_KEY}"
    assert set(our_call.params) - {"Format"} == set(sdk_call.params)


def test_segment_common_image_upload_matches_segment_common_image_advance(
    recorder: list[Sent], tmp_path: Path
) -> None:
    data = jpeg((320, 240))

    def advance(client: Any, models: Any, runtime: Any) -> None:
        request = models.SegmentCommonImageAdvanceRequest(image_urlobject=io.BytesIO(data))
        assert client.segment_common_image_advance(request, runtime).body.data.image_url == RESULT_URL

    _official("alibabacloud_imageseg20191230", advance, data)
    official = list(recorder)
    recorder.clear()
    summary = _segflow(tmp_path, "oss-put-image.json", data)

    assert summary["done"] == 1, summary
    assert [s.host for s in official] == [s.host for s in recorder[:3]]
    assert official[0].query == {"Product": "imageseg", "RegionId": "cn-shanghai"}
    _compare(official, recorder, data, "ImageURL")
    assert recorder[3].url == RESULT_URL and len(recorder) == 4  # then the result is downloaded


def test_segment_video_body_upload_matches_segment_video_body_advance(
    recorder: list[Sent], tmp_path: Path
) -> None:
    data = mp4()

    def advance(client: Any, models: Any, runtime: Any) -> None:
        request = models.SegmentVideoBodyAdvanceRequest(video_url_object=io.BytesIO(data))
        assert client.segment_video_body_advance(request, runtime).body.request_id == "5C3A9E0F-ACTION"

    _official("alibabacloud_videoseg20200320", advance, data)
    official = list(recorder)
    recorder.clear()
    summary = _segflow(tmp_path, "oss-put-video.json", data)

    assert summary["submitted"] == 1, summary
    assert official[0].query == {"Product": "videoseg", "RegionId": "cn-shanghai"}
    _compare(official, recorder, data, "VideoUrl")
    assert len(recorder) == 3


def test_the_sdks_advance_methods_cannot_reach_a_local_engine(recorder: list[Sent]) -> None:
    """What docs/engine.md says: pointed at a local engine (`endpoint=127.0.0.1:8780`, plain HTTP), the
    official `*_advance` method still asks `openplatform.aliyuncs.com` for the upload slot and posts the
    file over HTTPS to `<Bucket>.<Endpoint>`, so only segflow's own upload path (and the SDKs' plain calls,
    `tests/engine/functional/test_engine_official_clients.py`) work against the engine."""
    client_module = pytest.importorskip("alibabacloud_imageseg20191230.client")
    models = pytest.importorskip("alibabacloud_imageseg20191230.models")
    openapi = pytest.importorskip("alibabacloud_tea_openapi.models")
    util = pytest.importorskip("alibabacloud_tea_util.models")
    config = openapi.Config(
        access_key_id=CREDENTIALS.access_key_id,
        access_key_secret=CREDENTIALS.access_key_secret,
        region_id="cn-shanghai",
        endpoint="127.0.0.1:8780",
        protocol="http",
    )
    request = models.SegmentCommonImageAdvanceRequest(image_urlobject=io.BytesIO(jpeg((64, 48))))
    client_module.Client(config).segment_common_image_advance(request, util.RuntimeOptions())
    authorize, post, call = recorder[:3]
    assert authorize.host == "openplatform.aliyuncs.com"  # not the configured endpoint
    assert post.url == f"https://{TEMP_BUCKET}.{OSS_ENDPOINT}/"  # HTTPS to <Bucket>.<Endpoint>
    assert call.host == "127.0.0.1"  # only the action itself goes where it was told
