"""The layer's form upload (`segflow.tempupload`) into a real OSS bucket, as the engine on Function Compute
grants it: a Post Policy signed with the engine role's STS key, so the form must carry its token.

GIVEN the loopback OSS (tests/support/oss_server.py, PostObject as OSS's API reference documents it) and a
      grant signed here the way OSS documents it (Base64(HMAC-SHA1(secret, policy)))
WHEN  the layer POSTs an object with a grant that names the STS token, without it, expired, or for
      another key prefix
THEN  only the complete, current grant stores the object, under the granted key; the others are refused
      with OSS's codes, which the layer reports as `TempUploadError`s (about that upload, never a fault).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from segflow.errors import TempUploadError
from segflow.tempupload import MultipartBody, UploadGrant, form_fields, post_form, temp_address
from segflow.transport import HttpTransport
from tests.support.oss_server import OssServer

BUCKET = "segflow-demo"
ROLE = ("STS.NEngineRoleKey", "engine-sts-secret", "CAIS+engine/token=")
PREFIX = "segflow-engine/temp/0123abcd/"
DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


@pytest.fixture(scope="module")
def oss() -> Iterator[OssServer]:
    with OssServer({ROLE[0]: (ROLE[1], ROLE[2])}, buckets=(BUCKET,)) as server:
        yield server


def _grant(
    oss: OssServer, *, token: str | None = ROLE[2], expires_in: float = 1800, prefix: str = PREFIX
) -> UploadGrant:
    expiration = datetime.fromtimestamp(time.time() + expires_in, timezone.utc)
    policy = {
        "expiration": expiration.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "conditions": [
            {"bucket": BUCKET},
            ["starts-with", "$key", prefix],
            ["content-length-range", 0, 1 << 20],
        ],
    }
    encoded = base64.b64encode(json.dumps(policy).encode()).decode()
    signature = base64.b64encode(hmac.new(ROLE[1].encode(), encoded.encode(), hashlib.sha1).digest()).decode()
    endpoint = oss.endpoint.split("//", 1)[1]
    return UploadGrant(BUCKET, endpoint, f"{PREFIX}input", ROLE[0], encoded, signature, "R", token)


def _post(grant: UploadGrant) -> str:
    address = temp_address(grant, "http")
    body = MultipartBody(form_fields(grant, address), grant.object_key, iter([DATA]), len(DATA))
    post_form(HttpTransport(None, 10), address, body)
    return address.object_url


def test_a_grant_signed_with_an_sts_key_stores_the_object_under_its_key(oss: OssServer) -> None:
    url = _post(_grant(oss))
    assert oss.objects(BUCKET)[f"{PREFIX}input"] == DATA
    assert url == f"http://{oss.endpoint.split('//', 1)[1]}/{BUCKET}/{PREFIX}input"


@pytest.mark.parametrize(
    ("options", "code"),
    [
        ({"token": None}, "InvalidAccessKeyId"),
        ({"expires_in": -60}, "AccessDenied"),
        ({"prefix": "segflow-engine/temp/other/"}, "AccessDenied"),
    ],
    ids=["no-token", "expired", "another-prefix"],
)
def test_an_incomplete_or_stale_grant_is_refused_with_osss_code(
    oss: OssServer, options: dict[str, object], code: str
) -> None:
    with pytest.raises(TempUploadError) as refused:
        _post(_grant(oss, **options))  # type: ignore[arg-type]
    assert refused.value.code == code and refused.value.http_status == 403
