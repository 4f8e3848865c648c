"""Our signers agree byte for byte with Alibaba's official libraries (issue 2, "Signing").

aliyun-python-sdk-core and alibabacloud-openapi-util / alibabacloud-tea-openapi are test-only
dependencies: the layer never imports them.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from types import ModuleType
from typing import Any

import pytest
from alibabacloud_openapi_util.client import Client as OpenApiUtil
from alibabacloud_tea_openapi.utils import Utils as TeaOpenApiUtils
from aliyunsdkcore.auth.composer import rpc_signature_composer

from segflow.errors import SigningError
from segflow.signing import (
    Credentials,
    percent_encode,
    sign_v1,
    sign_v3,
    utc_timestamp,
)
from tests.support.signing_cases import (
    CREDENTIAL_SETS,
    FIXED_NONCE,
    FIXED_NOW,
    PARAMETER_SETS,
    PLAIN,
    STS,
    TeaRequest,
    capture_official_rpc_call,
)

CASES = [
    pytest.param(params, creds, id=f"set{i}-{name}")
    for i, params in enumerate(PARAMETER_SETS)
    for name, creds in CREDENTIAL_SETS.items()
]
V3_SIGNERS = [pytest.param(OpenApiUtil, id="openapi-util"), pytest.param(TeaOpenApiUtils, id="tea-openapi")]


def _core_function(name: str) -> Any:
    module: ModuleType = rpc_signature_composer
    return getattr(module, name)


def _unsigned(params: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in params.items() if k != "Signature"}


@pytest.mark.parametrize(("params", "creds"), CASES)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_v1_string_to_sign_and_signature_match_aliyun_sdk_core(
    params: dict[str, str], creds: Credentials, method: str
) -> None:
    signed = sign_v1(method, params, creds, now=FIXED_NOW, nonce=FIXED_NONCE)

    their_string = _core_function("__compose_string_to_sign")(method, _unsigned(signed.params))
    their_signature = _core_function("__get_signature")(their_string, creds.access_key_secret)

    assert signed.string_to_sign == their_string
    assert signed.signature == their_signature
    assert signed.params["Signature"] == their_signature


@pytest.mark.parametrize(("params", "creds"), CASES)
@pytest.mark.parametrize("util", [OpenApiUtil, TeaOpenApiUtils], ids=["openapi-util", "tea-openapi"])
def test_v1_signature_matches_openapi_get_rpcsignature(
    params: dict[str, str], creds: Credentials, util: Any
) -> None:
    signed = sign_v1("POST", params, creds, now=FIXED_NOW, nonce=FIXED_NONCE)

    assert signed.signature == util.get_rpcsignature(
        _unsigned(signed.params), "POST", creds.access_key_secret
    )


@pytest.mark.parametrize(("params", "creds"), CASES)
@pytest.mark.parametrize("util", V3_SIGNERS)
@pytest.mark.parametrize(
    "body", [b"", b"ImageURL=http%3A%2F%2Fh%2Fa.jpg&Extra=%E4%B8%AD"], ids=["empty", "form"]
)
def test_v3_authorization_matches_openapi_get_authorization(
    params: dict[str, str], creds: Credentials, util: Any, body: bytes
) -> None:
    signed = sign_v3(
        "POST",
        "imageseg.cn-shanghai.aliyuncs.com",
        "SegmentCommonImage",
        "2019-12-30",
        params,
        body,
        creds,
        now=FIXED_NOW,
        nonce=FIXED_NONCE,
    )
    sent = {k: v for k, v in signed.headers.items() if k != "Authorization"}
    request = TeaRequest(method="POST", pathname="/", query=dict(params), headers=sent)

    theirs = util.get_authorization(
        request,
        "ACS3-HMAC-SHA256",
        hashlib.sha256(body).hexdigest(),
        creds.access_key_id,
        creds.access_key_secret,
    )

    assert signed.headers["Authorization"] == theirs
    assert signed.headers["x-acs-content-sha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("creds", [PLAIN, STS], ids=["plain", "sts"])
@pytest.mark.parametrize(
    "form", [None, {"ImageURL": "http://h/a b*~中.jpg", "Empty": ""}], ids=["query", "form"]
)
def test_v3_sends_exactly_the_headers_of_an_official_rpc_call(
    creds: Credentials, form: dict[str, str] | None
) -> None:
    """With the official client's nonce, date and user agent, sign_v3 yields its headers and signature."""
    captured = capture_official_rpc_call(
        creds, query={"ImageURL": "http://h/x y.png", "ReturnForm": "mask"}, body=form
    )

    signed = sign_v3(
        captured.method,
        captured.headers["host"],
        captured.headers["x-acs-action"],
        captured.headers["x-acs-version"],
        captured.query,
        captured.body,
        creds,
        headers={
            "user-agent": captured.headers["user-agent"],
            "x-acs-credentials-provider": captured.headers["x-acs-credentials-provider"],
        },
        nonce=captured.headers["x-acs-signature-nonce"],
        now=datetime.strptime(captured.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ"),
    )

    assert signed.headers == captured.headers


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (" ", "%20"),
        ("*", "%2A"),
        ("~", "~"),
        ("+", "%2B"),
        ("/", "%2F"),
        ("=", "%3D"),
        ("%", "%25"),
        ("中", "%E4%B8%AD"),
        ("AZaz09-_.", "AZaz09-_."),
        ("", ""),
    ],
)
def test_percent_encode_follows_rfc3986_as_spec_section_1_says(raw: str, encoded: str) -> None:
    """Spec section 1: unreserved `A-Z a-z 0-9 - _ . ~` kept, space -> %20, `*` -> %2A, `~` kept."""
    assert percent_encode(raw) == encoded


def test_utc_timestamp_converts_aware_times_to_utc() -> None:
    shanghai = timezone(timedelta(hours=8))

    assert utc_timestamp(datetime(2026, 11, 22, 11, 4, 5, tzinfo=shanghai)) == "2026-11-22T03:04:05Z"
    assert utc_timestamp(datetime(2026, 11, 22, 3, 4, 5)) == "2026-11-22T03:04:05Z"


# ------------------------------------------------------------------ ROA-style calls (FC 3.0)

ROA_PATH = "/2023-03-30/functions/segflow%24on-upload/invocations"
ROA_BODY = b'{"events": [{"eventName": "ObjectCreated:PutObject"}]}\x00\xff'


@pytest.mark.parametrize("creds", [PLAIN, STS], ids=["plain", "sts"])
@pytest.mark.parametrize("util", V3_SIGNERS)
def test_v3_roa_path_and_binary_body_match_openapi_get_authorization(creds: Credentials, util: Any) -> None:
    """FC 3.0 InvokeFunction signs its own path and an octet-stream body (alibabacloud-fc20230330)."""
    query = {"qualifier": "prod"}
    signed = sign_v3(
        "POST",
        "1234567890123456.cn-shanghai.fc.aliyuncs.com",
        "InvokeFunction",
        "2023-03-30",
        query,
        ROA_BODY,
        creds,
        headers={"content-type": "application/octet-stream", "x-fc-invocation-type": "Async"},
        now=FIXED_NOW,
        nonce=FIXED_NONCE,
        pathname=ROA_PATH,
    )
    sent = {k: v for k, v in signed.headers.items() if k != "Authorization"}
    request = TeaRequest(method="POST", pathname=ROA_PATH, query=query, headers=sent)

    theirs = util.get_authorization(
        request,
        "ACS3-HMAC-SHA256",
        hashlib.sha256(ROA_BODY).hexdigest(),
        creds.access_key_id,
        creds.access_key_secret,
    )

    assert signed.headers["Authorization"] == theirs
    assert signed.canonical_request.split("\n")[1] == ROA_PATH


def test_v3_roa_request_verifies_and_its_path_is_signed() -> None:
    from segflow_engine.verify import NonceCache, verify_request

    headers = {"content-type": "application/octet-stream"}
    signed = sign_v3(
        "POST", "h", "InvokeFunction", "2023-03-30", {}, ROA_BODY, PLAIN, headers=headers, pathname=ROA_PATH
    )
    lookup = {PLAIN.access_key_id: PLAIN.access_key_secret}.get

    verified = verify_request("POST", ROA_PATH, {}, signed.headers, ROA_BODY, lookup, nonces=NonceCache())
    assert verified.params == {"Action": "InvokeFunction", "Version": "2023-03-30"}
    with pytest.raises(SigningError) as caught:
        other = ROA_PATH.replace("segflow%24on-upload", "other")
        verify_request("POST", other, {}, signed.headers, ROA_BODY, lookup, nonces=NonceCache())
    assert caught.value.code == "SignatureDoesNotMatch"
