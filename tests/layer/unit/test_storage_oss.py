"""OssStorage against a stub of `oss2.Bucket` (pytest-mock).

The stub is a fake: the real OSS service cannot be reached from the tests (no network). It keeps objects
in memory and reproduces the OSS behaviour the adapter depends on — a range reaching past the end returns
the WHOLE object unless `x-oss-range-behavior: standard` is sent (then 416 for a start past the end),
`x-oss-forbid-overwrite: true` answers 409 FileAlreadyExists, multipart parts must be numbered from 1 and
be at least 100 KiB except the last, `list_objects_v2` pages with a continuation token. Its method
signatures are checked against the installed oss2 so it cannot drift from the real client. Presigned URLs
are produced by the real oss2 signer (pure computation) and their V1 signature is verified here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import oss2
import pytest
from pytest_mock import MockerFixture

from segflow.errors import ConfigError, ObjectNotFoundError, StorageError
from segflow.settings import Settings
from segflow.storage import storage_for
from segflow.storage.oss import OssStorage, oss_storage_from_settings
from segflow_cli.localbucket import LocalBuckets, LocalDirStorage
from tests.conftest import REPO_ROOT
from tests.support.oss_stub import (
    ENDPOINT,
    REAL_BUCKET,
    REQUEST_ID,
    STS_SECRET,
    FakeOssBucket,
    _oss_error,
    fc_context,
)
from tests.support.storage_contract import PART, StorageContract, chunked, md5_upper, payload


@pytest.fixture
def fake_buckets(mocker: MockerFixture) -> dict[str, FakeOssBucket]:
    buckets: dict[str, FakeOssBucket] = {}

    def make(auth: Any, endpoint: str, bucket_name: str, **kwargs: Any) -> FakeOssBucket:
        if bucket_name not in buckets:
            buckets[bucket_name] = FakeOssBucket(auth, endpoint, bucket_name, **kwargs)
        return buckets[bucket_name]

    mocker.patch("oss2.Bucket", side_effect=make)
    return buckets


@pytest.fixture
def auth() -> Any:
    return oss2.StsAuth("STS.AKID", STS_SECRET, "CAIStoken-value-0123456789")


@pytest.fixture
def storage(fake_buckets: dict[str, FakeOssBucket], auth: Any) -> OssStorage:
    return OssStorage("segflow-demo", ENDPOINT, auth)


@pytest.fixture
def fake(storage: OssStorage, fake_buckets: dict[str, FakeOssBucket]) -> FakeOssBucket:
    return fake_buckets["segflow-demo"]


@pytest.fixture
def fetch_presigned(fake: FakeOssBucket) -> Callable[[str], bytes]:
    """GET a presigned URL as OSS would: check the V1 URL signature, the expiry, then serve the object."""

    def fetch(url: str) -> bytes:
        parts = urlsplit(url)
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        assert parts.hostname == f"{fake.bucket_name}.oss-cn-shanghai.aliyuncs.com"
        key = unquote(parts.path[1:])
        expires = int(query["Expires"])
        assert expires > time.time()
        resource = f"/{fake.bucket_name}/{key}"
        if "security-token" in query:
            resource += f"?security-token={query['security-token']}"
        string_to_sign = f"GET\n\n\n{expires}\n{resource}"
        secret = STS_SECRET.encode()
        expected = base64.b64encode(hmac.new(secret, string_to_sign.encode(), hashlib.sha1).digest()).decode()
        assert query["Signature"] == expected, "presigned URL signature does not verify"
        return fake.objects[key][0]

    return fetch


class TestOssStorageContract(StorageContract):
    """The shared contract, against the fake bucket."""


# -- the fake stays faithful to oss2 -----------------------------------------------------------------
@pytest.mark.parametrize(
    "method",
    [
        "get_object",
        "head_object",
        "put_object",
        "init_multipart_upload",
        "upload_part",
        "complete_multipart_upload",
        "abort_multipart_upload",
        "list_objects_v2",
        "delete_object",
        "sign_url",
    ],
)
def test_fake_methods_have_the_real_oss2_signatures(method: str) -> None:
    real = inspect.signature(getattr(REAL_BUCKET, method))
    ours = inspect.signature(getattr(FakeOssBucket, method))
    assert list(real.parameters) == list(ours.parameters)


# -- the requests real OSS needs ---------------------------------------------------------------------
def test_ranged_read_sends_byte_range_and_standard_range_behavior(
    storage: OssStorage, fake: FakeOssBucket
) -> None:
    storage.put_bytes("incoming/v.mp4", payload(1000))
    assert storage.read_range("incoming/v.mp4", 990, 64) == payload(1000)[990:]
    (call,) = fake.calls_to("get_object")
    assert call["byte_range"] == (990, 1053)
    assert call["headers"] == {"x-oss-range-behavior": "standard"}


def test_read_starting_past_the_end_maps_416_to_empty(storage: OssStorage, fake: FakeOssBucket) -> None:
    storage.put_bytes("incoming/v.mp4", b"abc")
    assert storage.read_range("incoming/v.mp4", 3, 10) == b""


def test_put_if_absent_sends_forbid_overwrite(storage: OssStorage, fake: FakeOssBucket) -> None:
    storage.put_bytes("segflow-jobs/a.json", b"{}", content_type="application/json", if_absent=True)
    storage.put_bytes("segmented/b.json", b"{}", content_type="application/json")
    first, second = fake.calls_to("put_object")
    assert first["headers"] == {"Content-Type": "application/json", "x-oss-forbid-overwrite": "true"}
    assert second["headers"] == {"Content-Type": "application/json"}


def test_large_stream_is_a_multipart_upload_of_numbered_parts(
    storage: OssStorage, fake: FakeOssBucket
) -> None:
    data = payload(5 * PART + 500)
    consumed: list[int] = []

    def chunks() -> Iterator[bytes]:
        for number, chunk in enumerate(chunked(data, 10_000)):
            consumed.append(number)
            yield chunk

    original_upload_part = fake.upload_part
    consumed_at_first_part: list[int] = []

    def upload_part(*args: Any, **kwargs: Any) -> Any:
        consumed_at_first_part.append(len(consumed))
        return original_upload_part(*args, **kwargs)

    fake.upload_part = upload_part  # type: ignore[method-assign]
    etag = storage.put_stream("segmented/v.mp4", chunks(), content_type="video/mp4", part_size=PART)

    assert [c["headers"] for c in fake.calls_to("init_multipart_upload")] == [{"Content-Type": "video/mp4"}]
    parts = fake.calls_to("upload_part")
    assert [p["part_number"] for p in parts] == [1, 2, 3, 4, 5, 6]
    assert [p["size"] for p in parts] == [PART] * 5 + [500]
    assert fake.calls_to("complete_multipart_upload")[0]["part_numbers"] == [1, 2, 3, 4, 5, 6]
    assert etag.endswith("-6") and fake.objects["segmented/v.mp4"][0] == data
    # Streaming, not buffering: each part went up as soon as it was full (11 chunks of 10,000 bytes).
    assert consumed_at_first_part[:2] == [11, 21]
    assert fake.calls_to("put_object") == []


def test_small_stream_is_one_put_object(storage: OssStorage, fake: FakeOssBucket) -> None:
    storage.put_stream("segmented/m.png", chunked(payload(5000), 1000), part_size=PART)
    assert len(fake.calls_to("put_object")) == 1
    assert fake.calls_to("init_multipart_upload") == []


def test_failed_part_aborts_the_multipart_upload(storage: OssStorage, fake: FakeOssBucket) -> None:
    fake.fail_upload_part = _oss_error(oss2.exceptions.ServerError, 503, "ServiceUnavailable")
    with pytest.raises(StorageError) as caught:
        storage.put_stream("segmented/v.mp4", chunked(payload(2 * PART), PART), part_size=PART)
    assert caught.value.code == "ServiceUnavailable" and caught.value.http_status == 503
    assert fake.calls_to("abort_multipart_upload") == [{"key": "segmented/v.mp4", "upload_id": "upload-1"}]
    assert fake.uploads == {}


def test_part_size_below_the_oss_minimum_is_refused(storage: OssStorage) -> None:
    with pytest.raises(ValueError):
        storage.put_stream("segmented/v.mp4", [b"x"], part_size=PART - 1)


def test_list_pages_with_continuation_tokens(storage: OssStorage, fake: FakeOssBucket) -> None:
    for i in range(5):
        storage.put_bytes(f"segflow-jobs/pending/{i}.json", b"{}")
    keys = [
        info.key
        for info in storage.list(
            "segflow-jobs/pending/", start_after="segflow-jobs/pending/0.json", page_size=2
        )
    ]
    assert keys == [f"segflow-jobs/pending/{i}.json" for i in range(1, 5)]
    calls = fake.calls_to("list_objects_v2")
    assert [c["max_keys"] for c in calls] == [2, 2]
    assert calls[0]["start_after"] == "segflow-jobs/pending/0.json" and calls[0]["continuation_token"] == ""
    assert calls[1]["continuation_token"] != ""


def test_list_skips_console_folder_markers(storage: OssStorage, fake: FakeOssBucket) -> None:
    fake.objects["incoming/"] = (b"", md5_upper(b""), 0)
    storage.put_bytes("incoming/a.png", b"x")
    assert [info.key for info in storage.list("incoming/")] == ["incoming/a.png"]


def test_listing_stops_fetching_when_the_caller_stops(storage: OssStorage, fake: FakeOssBucket) -> None:
    for i in range(6):
        storage.put_bytes(f"incoming/{i}.png", b"x")
    listing = storage.list("incoming/", page_size=2)
    next(listing)
    assert len(fake.calls_to("list_objects_v2")) == 1


def test_presign_signs_a_get_with_the_sts_token(storage: OssStorage, fake: FakeOssBucket) -> None:
    storage.put_bytes("incoming/猫 1.png", b"x")
    url = storage.presign_get("incoming/猫 1.png", 1800)
    assert fake.calls_to("sign_url") == [
        {"method": "GET", "key": "incoming/猫 1.png", "expires": 1800, "slash_safe": True}
    ]
    query = parse_qs(urlsplit(url).query)
    assert query["security-token"] == ["CAIStoken-value-0123456789"]
    assert query["OSSAccessKeyId"] == ["STS.AKID"]
    assert abs(int(query["Expires"][0]) - (time.time() + 1800)) < 60


# -- error mapping -----------------------------------------------------------------------------------
def test_head_of_missing_object_is_not_found_with_request_id(storage: OssStorage) -> None:
    with pytest.raises(ObjectNotFoundError) as caught:
        storage.head("incoming/nope.png")
    assert caught.value.http_status == 404 and caught.value.request_id == REQUEST_ID


def test_access_denied_keeps_code_status_and_request_id(storage: OssStorage, fake: FakeOssBucket) -> None:
    def denied(*args: Any, **kwargs: Any) -> Any:
        raise _oss_error(oss2.exceptions.ServerError, 403, "AccessDenied")

    fake.get_object = denied  # type: ignore[method-assign]
    with pytest.raises(StorageError) as caught:
        storage.get_bytes("incoming/a.png")
    assert (caught.value.code, caught.value.http_status, caught.value.request_id) == (
        "AccessDenied",
        403,
        REQUEST_ID,
    )


def test_connection_failure_is_a_storage_error(storage: OssStorage, fake: FakeOssBucket) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise oss2.exceptions.RequestError(ConnectionResetError("reset by peer"))

    fake.head_object = broken  # type: ignore[method-assign]
    with pytest.raises(StorageError) as caught:
        storage.head("incoming/a.png")
    assert caught.value.code == "RequestError"


# -- credentials and endpoints -----------------------------------------------------------------------
def signed_key_id(auth: Any) -> str:
    """The AccessKeyId an oss2 auth object signs with, read back from a real (offline) presigned URL."""
    url = REAL_BUCKET(auth, ENDPOINT, "segflow-demo").sign_url("GET", "k", 60)
    return parse_qs(urlsplit(url).query)["OSSAccessKeyId"][0]


def test_python310_context_credentials_make_sts_auth(fake_buckets: dict[str, FakeOssBucket]) -> None:
    settings = Settings.from_env({"FC_REGION": "cn-shanghai", "FC_FUNCTION_NAME": "on-upload"})
    storage = oss_storage_from_settings(settings, "segflow-demo", fc_context())
    bucket = fake_buckets["segflow-demo"]
    assert isinstance(bucket.auth, oss2.StsAuth)
    assert signed_key_id(bucket.auth) == "STS.ctx"
    assert storage.endpoint == "https://oss-cn-shanghai-internal.aliyuncs.com"


def test_python312_environment_credentials_make_sts_auth(fake_buckets: dict[str, FakeOssBucket]) -> None:
    settings = Settings.from_env(
        {
            "FC_REGION": "cn-shanghai",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.env",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "CAIS-env-token",
        }
    )
    oss_storage_from_settings(settings, "segflow-demo", SimpleNamespace(credentials=None))
    bucket = fake_buckets["segflow-demo"]
    assert isinstance(bucket.auth, oss2.StsAuth) and signed_key_id(bucket.auth) == "STS.env"


def test_long_term_key_without_token_makes_plain_auth(fake_buckets: dict[str, FakeOssBucket]) -> None:
    settings = Settings.from_env(
        {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "lt-secret"}
    )
    storage = oss_storage_from_settings(settings, "segflow-demo", None)
    bucket = fake_buckets["segflow-demo"]
    assert type(bucket.auth) is oss2.Auth
    assert storage.endpoint == "https://oss-cn-shanghai.aliyuncs.com"  # outside FC: public endpoint


def test_no_credentials_anywhere_is_a_config_error(fake_buckets: dict[str, FakeOssBucket]) -> None:
    with pytest.raises(ConfigError):
        oss_storage_from_settings(Settings.from_env({}), "segflow-demo", None)


def test_bucket_in_another_region_uses_that_regions_public_endpoint(
    fake_buckets: dict[str, FakeOssBucket],
) -> None:
    settings = Settings.from_env({"FC_REGION": "cn-shanghai"})
    storage = oss_storage_from_settings(settings, "segflow-demo", fc_context(), region="cn-beijing")
    assert storage.endpoint == "https://oss-cn-beijing.aliyuncs.com"


def test_endpoint_override_wins(fake_buckets: dict[str, FakeOssBucket]) -> None:
    settings = Settings.from_env(
        {"FC_REGION": "cn-shanghai", "SEGFLOW_OSS_ENDPOINT": "oss-accelerate.aliyuncs.com"}
    )
    storage = oss_storage_from_settings(settings, "segflow-demo", fc_context())
    assert storage.endpoint == "https://oss-accelerate.aliyuncs.com"


def test_the_layer_picks_oss_and_the_local_tools_pick_bucket_directories(
    tmp_path: Any, fake_buckets: dict[str, FakeOssBucket]
) -> None:
    """The layer only knows OSS (a variable cannot turn a deployed function into a local one); the local
    tools hand `LocalBuckets` to the services instead."""
    remote = storage_for(
        Settings.from_env({"FC_REGION": "cn-shanghai", "SEGFLOW_LOCAL_BUCKET_DIR": str(tmp_path)}),
        "segflow-demo",
        fc_context(),
    )
    local = LocalBuckets(tmp_path)("segflow-demo")
    assert isinstance(local, LocalDirStorage) and local.bucket_dir == tmp_path.resolve() / "segflow-demo"
    assert isinstance(remote, OssStorage) and fake_buckets == {"segflow-demo": fake_buckets["segflow-demo"]}


def test_importing_the_layer_does_not_import_oss2() -> None:
    code = (
        "import sys, segflow.storage, segflow.settings, segflow.events, segflow.logs;"
        "sys.exit(1 if 'oss2' in sys.modules else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        env={"PYTHONPATH": f"{REPO_ROOT / 'shared'}"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
