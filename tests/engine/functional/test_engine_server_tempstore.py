"""The engine's temporary bucket: AuthorizeFileUpload and the form upload it grants (upload input path).

GIVEN the engine on loopback (stub models) and segflow's client
WHEN  an input is handed over the way the official SDK's `*_advance` methods do it — AuthorizeFileUpload,
      a form POST of the file to the temporary bucket it names, the action called with that object's URL
THEN  the engine answers like the platform: a signed call gets a grant for its own bucket, the POST is
      checked as OSS checks a PostObject (signature, expiry, key prefix, content-length-range; codes from
      OSS's PostObject documentation and "How to handle common errors when the PostObject operation is
      called"), and the action fetches the stored object.
"""

from __future__ import annotations

import base64
import calendar
import json
import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from segflow.client import Endpoints, VisionClient
from segflow.errors import ApiError
from segflow.ratelimit import RateLimiter
from segflow.retry import RetryPolicy
from segflow.storage.base import ObjectInfo, Storage
from segflow.tempupload import MultipartBody, UploadGrant, form_fields, post_form, temp_address, upload_input
from segflow_cli.localbucket import LocalDirStorage
from segflow_engine.tempstore import TEMP_BUCKET, TempBucket
from tests.support.engine_server import RunningEngine, StubActions, make_mp4, make_png

MiB = 1024 * 1024


@pytest.fixture
def temp(engine: RunningEngine) -> TempBucket:
    return engine.server.engine.temp_bucket


def _client(engine: RunningEngine, *, secret: str | None = None, signature: str = "v3") -> VisionClient:
    from segflow.signing import Credentials

    url = engine.base_url
    return VisionClient(
        Credentials(engine.access_key_id, secret or engine.access_key_secret),
        endpoints=Endpoints(imageseg=url, videoseg=url, picwish=url, openplatform=url),
        signature_version=signature,
        rate_limiter=RateLimiter(1000, burst=10),
        upload_rate_limiter=RateLimiter(1000, burst=10),
        retry=RetryPolicy(max_attempts=1),
    )


def _policy(grant: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.b64decode(grant["EncodedPolicy"]))
    return decoded


def _post(engine: RunningEngine, grant: dict[str, Any], data: bytes) -> None:
    parsed = UploadGrant.from_document({"RequestId": "R", **grant})
    address = temp_address(parsed, "http")
    body = MultipartBody(form_fields(parsed, address), parsed.object_key, iter([data]), len(data))
    post_form(_client(engine).transport, address, body)


def _refusal(engine: RunningEngine, grant: dict[str, Any], data: bytes = b"x" * 100) -> ApiError:
    with pytest.raises(ApiError) as raised:
        _post(engine, grant, data)
    return raised.value


def _stored(engine: RunningEngine, key: str) -> int:
    return requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10).status_code


# -- AuthorizeFileUpload --------------------------------------------------------------------------------


@pytest.mark.parametrize(("product", "limit"), [("imageseg", 4 * MiB), ("videoseg", 1024 * MiB)])
def test_a_signed_call_gets_a_grant_for_the_engines_own_bucket(
    engine: RunningEngine, product: str, limit: int
) -> None:
    grant = _client(engine).authorize_file_upload(product, "cn-shanghai")

    assert grant["RequestId"] and grant["Bucket"] == TEMP_BUCKET and grant["Endpoint"] == engine.endpoint
    policy = _policy(grant)
    prefix = next(c[2] for c in policy["conditions"] if isinstance(c, list) and c[0] == "starts-with")
    assert grant["ObjectKey"].startswith(prefix) and prefix.endswith("/")
    assert ["content-length-range", 0, limit] in policy["conditions"]
    expires = calendar.timegm(time.strptime(policy["expiration"], "%Y-%m-%dT%H:%M:%S.000Z"))
    assert 0 < expires - time.time() <= 1800


def test_the_official_openapi_client_call_is_answered(engine: RunningEngine) -> None:
    """The exact call the SDK's advance methods make (tea-openapi `call_api`, v3-signed GET)."""
    openapi = pytest.importorskip("alibabacloud_tea_openapi.client")
    models = pytest.importorskip("alibabacloud_tea_openapi.models")
    util = pytest.importorskip("alibabacloud_tea_util.models")
    client = openapi.Client(
        models.Config(
            access_key_id=engine.access_key_id,
            access_key_secret=engine.access_key_secret,
            endpoint=engine.endpoint,
            protocol="http",
            region_id="cn-shanghai",
        )
    )
    params = models.Params(
        action="AuthorizeFileUpload", version="2019-12-19", protocol="HTTP", pathname="/", method="GET",
        auth_type="AK", style="RPC", req_body_type="formData", body_type="json",
    )  # fmt: skip
    request = models.OpenApiRequest(query={"Product": "videoseg", "RegionId": "cn-shanghai"})
    body = client.call_api(params, request, util.RuntimeOptions())["body"]
    assert body["Bucket"] == TEMP_BUCKET and body["UseAccelerate"] is False


def test_authorize_file_upload_is_signed_like_any_rpc_call(engine: RunningEngine) -> None:
    assert _client(engine, signature="v1").authorize_file_upload("imageseg", "cn-shanghai")["ObjectKey"]
    with pytest.raises(ApiError) as raised:
        _client(engine, secret="not-the-secret").authorize_file_upload("imageseg", "cn-shanghai")
    assert raised.value.code == "SignatureDoesNotMatch"


def test_a_product_the_engine_does_not_serve_is_refused(engine: RunningEngine) -> None:
    with pytest.raises(ApiError) as raised:
        _client(engine).authorize_file_upload("facebody", "cn-shanghai")
    assert (raised.value.code, raised.value.http_status) == ("InvalidParameter", 400)


# -- the whole path -------------------------------------------------------------------------------------


def test_an_image_is_uploaded_and_the_action_fetches_it(
    engine: RunningEngine, stub: StubActions, tmp_path: Path
) -> None:
    storage = LocalDirStorage(tmp_path, "segflow-demo")
    image = make_png(64, 48, channels=3)
    storage.put_bytes("incoming/a.png", image)
    client = _client(engine)

    url = upload_input(client, storage, "incoming/a.png", product="imageseg", region_id="cn-shanghai")
    result = client.segment("SegmentCommonImage", url)

    assert url.startswith(f"{engine.base_url}/{TEMP_BUCKET}/")  # path-style: an IP has no subdomains
    assert requests.get(url, timeout=10).content == image
    assert stub.calls[-1].action == "SegmentCommonImage" and stub.calls[-1].input_size == len(image)
    assert result.image_url


def test_a_video_is_uploaded_and_the_job_fetches_it(
    engine: RunningEngine, stub: StubActions, tmp_path: Path
) -> None:
    storage = LocalDirStorage(tmp_path, "segflow-demo")
    video = make_mp4()
    storage.put_bytes("incoming/v.mp4", video)
    client = _client(engine)

    url = upload_input(client, storage, "incoming/v.mp4", product="videoseg", region_id="cn-shanghai")
    submitted = client.segment("SegmentVideoBody", url)
    assert submitted.job_id
    deadline = time.monotonic() + 60
    while not (job := client.get_async_job_result(submitted.job_id)).succeeded:
        assert not job.failed and time.monotonic() < deadline, job
        time.sleep(0.1)
    assert stub.calls[-1].action == "SegmentVideoBody" and stub.calls[-1].input_size == len(video)


# -- PostObject refusals --------------------------------------------------------------------------------


def test_an_expired_policy_is_refused(engine: RunningEngine, temp: TempBucket) -> None:
    grant = temp.grant("imageseg", expires_in=-60)
    refused = _refusal(engine, grant)
    assert (refused.http_status, refused.code) == (403, "AccessDenied")
    assert "Policy expired" in refused.message and refused.request_id
    assert _stored(engine, grant["ObjectKey"]) == 404


def test_a_policy_signed_with_another_secret_is_refused(engine: RunningEngine, temp: TempBucket) -> None:
    grant = {**temp.grant("imageseg"), "Signature": base64.b64encode(b"x" * 20).decode()}
    refused = _refusal(engine, grant)
    assert (refused.http_status, refused.code) == (403, "AccessDenied")
    assert "SignatureDoesNotMatch" in refused.message


def test_an_unknown_access_key_is_refused(engine: RunningEngine, temp: TempBucket) -> None:
    refused = _refusal(engine, {**temp.grant("imageseg"), "AccessKeyId": "LTAIsomebodyelse"})
    assert (refused.http_status, refused.code) == (403, "InvalidAccessKeyId")


def test_a_key_outside_the_policys_prefix_is_refused(engine: RunningEngine, temp: TempBucket) -> None:
    grant = {**temp.grant("imageseg"), "ObjectKey": "elsewhere/file.png"}
    refused = _refusal(engine, grant)
    assert (refused.http_status, refused.code) == (403, "AccessDenied")
    assert "Policy Condition failed" in refused.message and "starts-with" in refused.message
    assert _stored(engine, "elsewhere/file.png") == 404


def test_a_file_over_the_products_limit_is_refused_and_not_kept(
    engine: RunningEngine, temp: TempBucket
) -> None:
    grant = temp.grant("imageseg")
    refused = _refusal(engine, grant, b"\0" * (4 * MiB + 1))
    assert (refused.http_status, refused.code) == (400, "EntityTooLarge")
    assert _stored(engine, grant["ObjectKey"]) == 404
    _post(engine, grant, b"\0" * (4 * MiB))  # exactly the limit is fine
    assert _stored(engine, grant["ObjectKey"]) == 200


def test_a_body_that_is_not_a_form_is_malformed(engine: RunningEngine) -> None:
    answer = requests.post(f"{engine.base_url}/{TEMP_BUCKET}/", data=b"file=x", timeout=10)
    assert answer.status_code == 400 and b"<Code>MalformedPOSTRequest</Code>" in answer.content


def test_a_declared_body_far_over_any_limit_is_refused_unread(engine: RunningEngine) -> None:
    """Over the largest upload (`ServerLimits.max_body_bytes`) the server refuses it before the bucket
    sees it: HTTP 413 where OSS answers 400 `EntityTooLarge` (below that limit the bucket answers)."""
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(
            f"POST /{TEMP_BUCKET}/ HTTP/1.1\r\nHost: {engine.endpoint}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000000000\r\n\r\n".encode()
        )
        answer = b""
        while block := sock.recv(65536):  # the engine closes the connection after its answer
            answer += block
    assert answer.startswith(b"HTTP/1.1 413 ") and b"Connection: close" in answer


def test_a_temporary_object_lives_for_its_ttl_only(engine: RunningEngine, temp: TempBucket) -> None:
    grant = temp.grant("imageseg")
    _post(engine, grant, b"short-lived")
    assert _stored(engine, grant["ObjectKey"]) == 200
    real_clock = temp.clock
    temp.clock = lambda: real_clock() + temp.object_ttl_seconds + 1
    try:
        assert _stored(engine, grant["ObjectKey"]) == 404
        assert temp.cleanup() >= 1
    finally:
        temp.clock = real_clock
    assert _stored(engine, grant["ObjectKey"]) == 404


# -- memory ---------------------------------------------------------------------------------------------


class GeneratedObject(Storage):
    """One large object made up on the fly: `open_stream` yields its chunks lazily (no file behind it)."""

    bucket = "segflow-demo"

    def __init__(self, size: int, chunk: int = MiB) -> None:
        self.size, self.chunk, self.chunks_made = size, chunk, 0

    def head(self, key: str) -> ObjectInfo:
        return ObjectInfo(key, self.size, "0" * 32)

    def open_stream(self, key: str, chunk_size: int = MiB) -> Iterator[bytes]:
        def chunks() -> Iterator[bytes]:
            for start in range(0, self.size, self.chunk):
                self.chunks_made += 1
                yield bytes([self.chunks_made % 256]) * min(self.chunk, self.size - start)

        return chunks()

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        raise AssertionError("the upload streams, it never reads ranges")

    def get_bytes(self, key: str) -> bytes:
        raise AssertionError("the upload must not load the whole object")

    def put_bytes(self, key: str, data: bytes, **kwargs: Any) -> str:
        raise AssertionError("read-only")

    def put_stream(self, key: str, chunks: Any, **kwargs: Any) -> str:
        raise AssertionError("read-only")

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        raise AssertionError("not listed")

    def delete(self, key: str) -> None:
        raise AssertionError("read-only")

    def presign_get(self, key: str, expires_seconds: int) -> str:
        raise AssertionError("the upload path does not presign")


def test_a_large_video_is_streamed_with_memory_bounded_by_a_chunk(
    engine: RunningEngine, temp: TempBucket
) -> None:
    """256 MiB through the upload path (client and engine in this process): the peak of Python memory
    stays a few MiB — one storage chunk (1 MiB) on the client side, a 256 KiB block on the engine's."""
    size = 256 * MiB
    storage = GeneratedObject(size)
    tracemalloc.start()
    try:
        url = upload_input(
            _client(engine), storage, "incoming/big.mp4", product="videoseg", region_id="cn-shanghai"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"\nupload of {size // MiB} MiB: peak traced memory {peak / MiB:.1f} MiB")
    assert storage.chunks_made == size // MiB
    assert peak < 16 * MiB
    stored = temp.object_path(url.split(engine.endpoint, 1)[1])
    assert stored is not None and stored.stat().st_size == size
