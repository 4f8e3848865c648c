"""Our FC 3.0 InvokeFunction request is the official SDK's (alibabacloud-fc20230330, a test-only
dependency): recorded by replacing the SDK's transport (`DaraCore.do_action`, which its Tea runtime
calls to send), compared with what our client sends to the loopback stand-in, and both verified."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from unittest import mock

import pytest

from segflow.signing import Credentials, sign_v3
from segflow_cli.fcapi import FC_API_VERSION, FcClient, invoke_request
from segflow_engine.verify import NonceCache, verify_request
from tests.support.fake_api import DEFAULT_SECRETS, TEST_CREDENTIALS, TEST_STS_CREDENTIALS
from tests.support.fc_standin import ACCOUNT_ID, FcStandIn

HOST = f"{ACCOUNT_ID}.cn-shanghai.fc.aliyuncs.com"
EVENT = b'{"events": [{"eventName": "ObjectCreated:PutObject"}]}'
CASES = [
    pytest.param("segflow-on-upload", None, False, False, id="sync"),
    pytest.param("segflow-on-upload", "prod", False, True, id="sync-qualifier-log"),
    pytest.param("segflow-on-upload", "3", True, False, id="async-version"),
    pytest.param("segflow$on-upload", None, True, False, id="fc2-style-name"),
]
CREDS = [pytest.param(TEST_CREDENTIALS, id="plain"), pytest.param(TEST_STS_CREDENTIALS, id="sts")]


@dataclass(frozen=True)
class Sent:
    method: str
    pathname: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    sdk_status: int
    sdk_request_id: str


def official_invoke(
    creds: Credentials, function: str, qualifier: str | None, asynchronous: bool, log_tail: bool
) -> Sent:
    """Run the SDK's invoke_function with its transport replaced by a recorder answering like FC."""
    from alibabacloud_fc20230330 import models
    from alibabacloud_fc20230330.client import Client
    from alibabacloud_tea_openapi.models import Config
    from darabonba.core import DaraCore
    from darabonba.response import DaraResponse
    from darabonba.runtime import RuntimeOptions

    captured: list[Any] = []

    def transport(request: Any, runtime: Any) -> DaraResponse:
        captured.append(request)
        response = DaraResponse()
        response.status_code = 202 if asynchronous else 200
        response.headers = {"x-fc-request-id": "1-6f0c-canned"}
        response.body = b"" if asynchronous else b'{"records": 1}'
        return response

    config = Config(
        access_key_id=creds.access_key_id,
        access_key_secret=creds.access_key_secret,
        security_token=creds.security_token,
        endpoint=HOST,
        region_id="cn-shanghai",
    )
    headers = models.InvokeFunctionHeaders(
        x_fc_invocation_type="Async" if asynchronous else "Sync", x_fc_log_type="Tail" if log_tail else "None"
    )
    request = models.InvokeFunctionRequest(body=EVENT, qualifier=qualifier)
    with mock.patch.object(DaraCore, "do_action", staticmethod(transport)):
        answer = Client(config).invoke_function_with_options(function, request, headers, RuntimeOptions())
    [sent] = captured
    body = sent.body if isinstance(sent.body, bytes) else str(sent.body or "").encode()
    return Sent(
        sent.method,
        sent.pathname,
        {k: str(v) for k, v in sent.query.items()},
        {k: str(v) for k, v in sent.headers.items()},
        body,
        answer.status_code,
        answer.headers["x-fc-request-id"],
    )


def verify(sent_method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    verify_request(sent_method, path, query, lowered, body, DEFAULT_SECRETS.get, nonces=NonceCache())


def signed_set(authorization: str) -> set[str]:
    return set(authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";"))


@pytest.fixture
def fc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FcStandIn]:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FcStandIn() as standin:
        standin.deploy("segflow-on-upload", qualifiers=frozenset({"prod", "3"}))
        standin.deploy("segflow$on-upload")
        yield standin
    assert standin.errors == []


@pytest.mark.parametrize("creds", CREDS)
@pytest.mark.parametrize(("function", "qualifier", "asynchronous", "log_tail"), CASES)
def test_with_the_sdks_nonce_and_date_we_sign_exactly_its_headers(
    creds: Credentials, function: str, qualifier: str | None, asynchronous: bool, log_tail: bool
) -> None:
    official = official_invoke(creds, function, qualifier, asynchronous, log_tail)
    ours = invoke_request(function, qualifier=qualifier, asynchronous=asynchronous, log_tail=log_tail)

    signed = sign_v3(
        "POST",
        HOST,
        "InvokeFunction",
        FC_API_VERSION,
        ours.query,
        EVENT,
        creds,
        headers={
            **ours.headers,
            "user-agent": official.headers["user-agent"],
            "x-acs-credentials-provider": official.headers["x-acs-credentials-provider"],
        },
        nonce=official.headers["x-acs-signature-nonce"],
        now=datetime.strptime(official.headers["x-acs-date"], "%Y-%m-%dT%H:%M:%SZ"),
        pathname=ours.pathname,
    )

    assert (official.method, official.pathname, official.query) == ("POST", ours.pathname, ours.query)
    assert official.body == EVENT
    assert signed.headers == official.headers
    assert official.sdk_status == (202 if asynchronous else 200)  # the canned answer is one the SDK takes
    assert official.sdk_request_id == "1-6f0c-canned"


@pytest.mark.parametrize("creds", CREDS)
@pytest.mark.parametrize(("function", "qualifier", "asynchronous", "log_tail"), CASES)
def test_our_client_sends_what_the_sdk_sends_and_both_verify(
    fc: FcStandIn,
    creds: Credentials,
    function: str,
    qualifier: str | None,
    asynchronous: bool,
    log_tail: bool,
) -> None:
    official = official_invoke(creds, function, qualifier, asynchronous, log_tail)

    with FcClient(creds, fc.url) as client:
        client.invoke(function, EVENT, qualifier=qualifier, asynchronous=asynchronous, log_tail=log_tail)
    [ours] = fc.requests

    assert ours.signature_error is None
    verify(official.method, official.pathname, official.query, official.headers, official.body)
    assert (ours.method, ours.path, ours.query, ours.body) == (
        official.method,
        official.pathname,
        official.query,
        official.body,
    )
    theirs_signed = signed_set(official.headers["Authorization"]) - {"x-acs-credentials-provider"}
    assert ours.signed_headers == theirs_signed
    for name in sorted(h for h in theirs_signed if h.startswith(("x-fc-", "x-acs-action", "x-acs-version"))):
        assert ours.headers[name] == official.headers[name], name
    assert ours.headers["content-type"] == official.headers["content-type"] == "application/octet-stream"
