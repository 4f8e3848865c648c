"""Parameter sets and fixed inputs shared by the signing tests.

The sets cover what breaks naive encoders (VISION-API.md §1: RFC 3986, space -> %20, `*` -> %2A, `~` kept):
reserved characters, `%`, `+`, Chinese, empty values, long values, and STS credentials.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from unittest import mock

from segflow.signing import Credentials

FIXED_NOW = datetime(2026, 11, 22, 3, 4, 5, tzinfo=timezone.utc)
FIXED_NONCE = "3c2e78496ad404380e7964151b29f874"

PLAIN = Credentials("LTAI5tTestKeyId", "TestSecret0123456789abcdefABCD")
AWKWARD_SECRET = Credentials("LTAI5tOtherKey", "s3cr3t with space*~+/=%中")
STS = Credentials(
    "STS.NUgYrLnoC37mZZCNnAbez2wAa",
    "3C8XkQbvWcuwq1JwTRcDGMXyTwbYB25jRE9ZXBYGvXQ5",
    "CAIS+gF1q6Ft5B2yfSjIr5bMPvPmi+ZoxPi6bWPVmDM4aOxUnqTs1Dz2IHxMdHdoAeoet/o0nGpX7Pwclrp/"
    "SpdDFkvLZPMrt5dAqOMa4oE2Y1hSf8FpXjNE/3lCJn6rYrCOu8eUzpI0zeDmVzaC",
)

PARAMETER_SETS: list[dict[str, str]] = [
    {
        "Action": "SegmentCommonImage",
        "Version": "2019-12-30",
        "ImageURL": "http://bucket.oss-cn-shanghai.aliyuncs.com/a.jpg",
    },
    {"Action": "SegmentBody", "Version": "2019-12-30", "ImageURL": "http://h/a b.jpg", "Async": "true"},
    {"Action": "SegmentHair", "ImageURL": "http://h/star*.png"},
    {"Action": "SegmentHead", "ImageURL": "http://h/tilde~name.png", "ReturnForm": "mask"},
    {"Action": "SegmentFace", "ImageURL": "http://h/plus+sign.png"},
    {"Action": "ParseFace", "ImageURL": "http://h/dir/sub/slash.png"},
    {"Action": "SegmentVehicle", "ImageURL": "http://h/q?x=1&y=2"},
    {"Action": "SegmentFurniture", "ImageURL": "http://h/percent%20already%2Aencoded.png"},
    {"Action": "SegmentCommodity", "ImageURL": "http://h/人像/照片.jpg"},
    {"Action": "RefineMask", "ImageURL": "http://h/a.jpg", "MaskImageURL": ""},
    {"Action": "SegmentVideoBody", "Version": "2020-03-20", "VideoUrl": "http://h/v.mp4", "Empty": ""},
    {"Action": "GetAsyncJobResult", "JobId": "E3E4A5C5-8D1B-4A2B-9E1F-000000000000"},
    {"Action": "A", "Key": " leading and trailing "},
    {"Action": "A", "Key": "!'()*"},
    {"Action": "A", "Key": "-_.~"},
    {"Action": "A", "Key": "=&=&"},
    {"Action": "A", "Key": "100%"},
    {"Action": "A", "Key": "a+b=c/d"},
    {"Action": "A", "Key": "日本語と中文 mixed ünïcödé"},
    {"Action": "A", "Key": "emoji 😀 four-byte"},
    {"Action": "A", "Key": "x" * 2048},
    {"Action": "A", "Key": "tab\tnewline\nreturn\r"},
    {"Action": "A", "Zeta": "1", "alpha": "2", "Alpha": "3", "_under": "4", "9num": "5"},
    {"Action": "A", "RegionId": "cn-shanghai", "Format": "XML"},
    {},
]

CREDENTIAL_SETS = {"plain": PLAIN, "awkward-secret": AWKWARD_SECRET, "sts": STS}


@dataclass(frozen=True)
class CapturedRequest:
    """A request as the official Tea SDK was about to send it (query still decoded)."""

    method: str
    pathname: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


def capture_official_rpc_call(
    credentials: Credentials,
    *,
    signature_algorithm: str | None = None,
    action: str = "SegmentCommonImage",
    version: str = "2019-12-30",
    query: dict[str, str] | None = None,
    body: dict[str, str] | None = None,
) -> CapturedRequest:
    """Run an RPC call of alibabacloud-tea-openapi with the transport replaced: no network at all.

    `signature_algorithm=None` is what today's product clients use (v3); `"v2"` selects the v1 RPC path.
    """
    from alibabacloud_tea_openapi.client import Client
    from alibabacloud_tea_openapi.models import Config
    from alibabacloud_tea_openapi.utils_models import OpenApiRequest, Params
    from darabonba.core import DaraCore
    from darabonba.runtime import RuntimeOptions

    captured: list[Any] = []

    def fake_transport(request: Any, runtime: Any) -> Any:
        captured.append(request)
        raise _Captured

    config = Config(
        access_key_id=credentials.access_key_id,
        access_key_secret=credentials.access_key_secret,
        security_token=credentials.security_token,
        endpoint="127.0.0.1:8780",
        protocol="http",
        region_id="cn-shanghai",
    )
    if signature_algorithm:
        config.signature_algorithm = signature_algorithm
    client = Client(config)
    params = Params(
        action=action,
        version=version,
        protocol="HTTP",
        pathname="/",
        method="POST",
        auth_type="AK",
        style="RPC",
        req_body_type="formData",
        body_type="json",
    )
    request = OpenApiRequest(query=dict(query or {}), body=dict(body) if body is not None else None)
    with (
        mock.patch.object(DaraCore, "do_action", staticmethod(fake_transport)),
        contextlib.suppress(Exception),
    ):
        client.call_api(params, request, RuntimeOptions())
    if not captured:
        raise AssertionError("the official client did not reach its transport")
    sent = captured[0]
    raw_body = sent.body or b""
    return CapturedRequest(
        method=sent.method,
        pathname=sent.pathname,
        query={k: str(v) for k, v in sent.query.items()},
        headers={k: str(v) for k, v in sent.headers.items()},
        body=raw_body.encode() if isinstance(raw_body, str) else bytes(raw_body),
    )


class _Captured(Exception):
    """Raised by the fake transport once it has the request."""


@dataclass
class TeaRequest:
    """The fields of the official SDK's request object (`Tea.request.TeaRequest`) that
    alibabacloud-openapi-util's `get_authorization` reads."""

    method: str
    pathname: str
    query: dict[str, str]
    headers: dict[str, str]
