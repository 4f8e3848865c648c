"""`SEGFLOW_SIGNATURE_VERSION=fc-trigger` signs exactly as Function Compute's own example for HTTP triggers.

FC, "Configure signature authentication for HTTP triggers" (Python example): parse the URL, build a request of
the method, `pathname = urlparse(url).path.replace('$', '%24')`, `query = {k: v[0] for k, v in
parse_qs(urlparse(url).query).items()}` and the headers `x-acs-date` and `x-acs-security-token` (the STS
token, or empty), then `alibabacloud_openapi_util.client.Client.get_authorization(request,
'ACS3-HMAC-SHA256', '', ak, sk)` and send it as `authorization`. These tests run that example on what segflow
sends and compare byte for byte (alibabacloud-openapi-util is a test dependency only).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from alibabacloud_openapi_util.client import Client as OpenApiUtil

from segflow.client import Endpoints, VisionClient
from segflow.signing import Credentials, sign_fc_trigger
from tests.support.signing_cases import FIXED_NOW, PARAMETER_SETS, PLAIN, STS, TeaRequest

TRIGGER = "https://segflow-engine-abcdefghij.cn-shanghai.fcapp.run"


def official_authorization(method: str, url: str, headers: dict[str, str], creds: Credentials) -> str:
    """FC's example, step by step, on a request as it is sent."""
    parts = urlparse(url)
    request = TeaRequest(
        method=method,
        pathname=parts.path.replace("$", "%24"),
        query={name: values[0] for name, values in parse_qs(parts.query, keep_blank_values=True).items()},
        headers={
            "x-acs-date": headers["x-acs-date"],
            "x-acs-security-token": headers["x-acs-security-token"],
        },
    )
    authorization: str = OpenApiUtil.get_authorization(
        request, "ACS3-HMAC-SHA256", "", creds.access_key_id, creds.access_key_secret
    )
    return authorization


@pytest.mark.parametrize("creds", [PLAIN, STS], ids=["plain", "sts"])
@pytest.mark.parametrize("params", PARAMETER_SETS, ids=[f"set{i}" for i in range(len(PARAMETER_SETS))])
@pytest.mark.parametrize("pathname", ["/", "", "/engine/a%20b", "/price$1/x"])
def test_the_authorization_is_get_authorization_of_the_official_example(
    creds: Credentials, params: dict[str, str], pathname: str
) -> None:
    signed = sign_fc_trigger("POST", pathname, params, creds, now=FIXED_NOW)
    request = TeaRequest(
        method="POST",
        pathname=pathname.replace("$", "%24"),
        query=dict(params),
        headers={k: v for k, v in signed.headers.items() if k != "authorization"},
    )
    theirs = OpenApiUtil.get_authorization(
        request, "ACS3-HMAC-SHA256", "", creds.access_key_id, creds.access_key_secret
    )
    assert signed.headers["authorization"] == theirs
    assert signed.headers["x-acs-date"] == "2026-11-22T03:04:05Z"
    assert signed.headers["x-acs-security-token"] == (creds.security_token or "")


def test_query_names_are_signed_unencoded_as_the_official_function_writes_them() -> None:
    signed = sign_fc_trigger("GET", "/", {"a b": "c d"}, PLAIN, now=FIXED_NOW)
    assert "\na b=c%20d\n" in signed.canonical_request
    assert signed.canonical_request.endswith("\nx-acs-date;x-acs-security-token\n")  # payload ""


@pytest.mark.parametrize("creds", [PLAIN, STS], ids=["plain", "sts"])
@pytest.mark.parametrize("endpoint", [TRIGGER, f"{TRIGGER}/", f"{TRIGGER}/prefix$v2"])
@pytest.mark.parametrize(
    ("action", "version", "params", "method"),
    [
        ("SegmentCommonImage", "2019-12-30", {"ImageURL": "http://h/a b+c*~中.png"}, None),
        ("GetAsyncJobResult", "2020-03-20", {"JobId": "E3E4A5C5-8D1B-4A2B"}, None),
        ("AuthorizeFileUpload", "2019-12-19", {"Product": "imageseg", "RegionId": "cn-shanghai"}, "GET"),
    ],
)
def test_the_client_sends_what_the_official_example_signs(
    creds: Credentials,
    endpoint: str,
    action: str,
    version: str,
    params: dict[str, str],
    method: str | None,
) -> None:
    client = VisionClient(
        creds, endpoints=Endpoints(imageseg=endpoint, videoseg=endpoint), signature_version="fc-trigger"
    )
    sent_method, url, headers = client._signed_request(  # what the transport sends, unchanged
        Endpoints(imageseg=endpoint).for_product("imageseg"), action, version, params, method
    )
    assert headers["authorization"] == official_authorization(sent_method, url, headers, creds)
    # The engine behind the trigger routes by the v3 headers; the gateway does not sign them.
    assert (headers["x-acs-action"], headers["x-acs-version"]) == (action, version)
    assert not any(name.startswith("x-fc-") for name in headers)  # FC refuses request headers x-fc-*
    assert "host" not in headers and "x-acs-content-sha256" not in headers
