"""Which host a presigned input URL names (SEGFLOW_INPUT_URL=presign), against the stubbed `oss2.Bucket`.

What the rule encodes (OSS docs, "Access OSS over default domain names" / "Map a custom domain name"):
since 2025-03-20, buckets of accounts opened after that date in mainland regions refuse data requests
(GET) on the default public domain, so such accounts need a custom domain (CNAME); the `-internal` domain
only answers inside Alibaba's network in that region, so a service fetching from outside cannot rely on
it. The function itself keeps reading through `-internal` inside FC: only the URL handed out changes.
The URLs are made by the real oss2 signer (pure computation) and their V1 signature is checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from pytest_mock import MockerFixture

from segflow.settings import Settings
from segflow.storage.oss import OssStorage, is_custom_domain, oss_storage_from_settings
from tests.support.oss_stub import REAL_BUCKET, FakeOssBucket, fc_context

KEY = "incoming/photos/猫 1.jpg"


class SigningBucket(FakeOssBucket):
    """The stub bucket, keeping `is_cname` as the real client does for the host of its URLs."""

    def __init__(
        self, auth: Any, endpoint: str, bucket_name: str, is_cname: bool = False, **kwargs: Any
    ) -> None:
        super().__init__(auth, endpoint, bucket_name, **kwargs)
        self.is_cname = is_cname

    def sign_url(
        self, method, key, expires, headers=None, params=None, slash_safe=False, additional_headers=None
    ):  # type: ignore[no-untyped-def]
        self._record("sign_url", method=method, key=key, expires=expires, slash_safe=slash_safe)
        real = REAL_BUCKET(self.auth, self.endpoint, self.bucket_name, is_cname=self.is_cname)
        url: str = real.sign_url(method, key, expires, headers=headers, params=params, slash_safe=slash_safe)
        return url


@pytest.fixture
def made(mocker: MockerFixture) -> list[SigningBucket]:
    """Every `oss2.Bucket` the adapter builds, in order (the first reads and writes, a second signs)."""
    buckets: list[SigningBucket] = []

    def make(auth: Any, endpoint: str, bucket_name: str, **kwargs: Any) -> SigningBucket:
        buckets.append(SigningBucket(auth, endpoint, bucket_name, **kwargs))
        return buckets[-1]

    mocker.patch("oss2.Bucket", side_effect=make)
    return buckets


def _storage(environ: dict[str, str], region: str | None = None) -> OssStorage:
    return oss_storage_from_settings(Settings.from_env(environ), "segflow-demo", fc_context(), region=region)


def _verified(url: str) -> str:
    """The URL's host, once its OSS V1 signature verifies over `/<bucket>/<key>` (also for a CNAME)."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    resource = f"/segflow-demo/{unquote(parts.path.split('/segflow-demo/', 1)[-1].lstrip('/'))}"
    resource += f"?security-token={query['security-token']}"
    string_to_sign = f"GET\n\n\n{query['Expires']}\n{resource}"
    expected = base64.b64encode(hmac.new(b"ctx-secret", string_to_sign.encode(), hashlib.sha1).digest())
    assert query["Signature"] == expected.decode(), "presigned URL signature does not verify"
    assert int(query["Expires"]) > time.time()
    return parts.hostname or ""


def test_inside_fc_reads_go_internal_but_the_url_handed_out_is_on_the_public_default_domain(
    made: list[SigningBucket],
) -> None:
    storage = _storage({"FC_REGION": "cn-shanghai", "FC_FUNCTION_NAME": "on-upload"})
    url = storage.presign_get(KEY, 1800)

    assert made[0].endpoint == "https://oss-cn-shanghai-internal.aliyuncs.com"
    assert _verified(url) == "segflow-demo.oss-cn-shanghai.aliyuncs.com"
    assert unquote(urlsplit(url).path) == f"/{KEY}"
    assert made[0].calls_to("sign_url") == []  # the reading client never signs the URL handed out


def test_a_custom_domain_is_used_as_a_cname(made: list[SigningBucket]) -> None:
    storage = _storage(
        {
            "FC_REGION": "cn-shanghai",
            "FC_FUNCTION_NAME": "f",
            "SEGFLOW_PRESIGN_ENDPOINT": "https://img.example.com",
        }
    )
    url = storage.presign_get(KEY, 1800)

    assert _verified(url) == "img.example.com"
    assert unquote(urlsplit(url).path) == f"/{KEY}"  # the domain names the bucket: no bucket in the host
    assert urlsplit(url).scheme == "https"
    assert made[1].is_cname and not made[0].is_cname
    assert made[0].endpoint == "https://oss-cn-shanghai-internal.aliyuncs.com"  # reads stay internal


def test_the_internal_domain_only_when_named(made: list[SigningBucket]) -> None:
    named = "https://oss-cn-shanghai-internal.aliyuncs.com"
    storage = _storage(
        {"FC_REGION": "cn-shanghai", "FC_FUNCTION_NAME": "f", "SEGFLOW_PRESIGN_ENDPOINT": named}
    )
    url = storage.presign_get(KEY, 1800)

    assert _verified(url) == "segflow-demo.oss-cn-shanghai-internal.aliyuncs.com"
    assert len(made) == 1, "the same endpoint as the reads: one client signs and reads"


@pytest.mark.parametrize(
    ("environ", "region", "host"),
    [
        (
            {"FC_REGION": "cn-shanghai", "FC_FUNCTION_NAME": "f"},
            None,
            "segflow-demo.oss-cn-shanghai.aliyuncs.com",
        ),
        (
            {"FC_REGION": "cn-shanghai", "FC_FUNCTION_NAME": "f"},
            "cn-beijing",
            "segflow-demo.oss-cn-beijing.aliyuncs.com",
        ),
        ({}, None, "segflow-demo.oss-cn-shanghai.aliyuncs.com"),
        (
            {"SEGFLOW_OSS_ENDPOINT": "https://oss-cn-shanghai-internal.aliyuncs.com"},
            None,
            "segflow-demo.oss-cn-shanghai.aliyuncs.com",
        ),
        (
            {"SEGFLOW_PRESIGN_ENDPOINT": "oss-accelerate.aliyuncs.com"},
            None,
            "segflow-demo.oss-accelerate.aliyuncs.com",
        ),
    ],
)
def test_no_url_is_handed_out_on_the_internal_domain_unless_asked_for(
    made: list[SigningBucket], environ: dict[str, str], region: str | None, host: str
) -> None:
    assert _verified(_storage(environ, region).presign_get(KEY, 600)) == host


@pytest.mark.parametrize(
    ("endpoint", "custom"),
    [
        ("https://img.example.com", True),
        ("img.example.com", True),
        ("http://cdn.example.cn:8080", True),
        ("https://oss-cn-shanghai.aliyuncs.com", False),
        ("oss-cn-shanghai-internal.aliyuncs.com", False),
        ("https://oss-accelerate.aliyuncs.com", False),
        ("https://cn-shanghai.oss.aliyuncs.com", False),
    ],
)
def test_a_custom_domain_is_any_host_outside_aliyuncs_com(endpoint: str, custom: bool) -> None:
    assert is_custom_domain(endpoint) is custom
