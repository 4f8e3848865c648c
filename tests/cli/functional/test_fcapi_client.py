"""`segflow_cli.fcapi` as a library (what a batch of asynchronous invocations will use): FcClient and the
STS account lookup against the loopback stand-in (tests/support/fc_standin.py cites the documents)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from segflow.errors import ConfigError
from segflow_cli.fcapi import CloudApiError, FcClient, caller_account_id, fc_endpoint
from tests.support.fake_api import TEST_CREDENTIALS, TEST_STS_CREDENTIALS
from tests.support.fc_standin import ACCOUNT_ID, FcStandIn


@pytest.fixture
def fc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FcStandIn]:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with FcStandIn() as standin:
        standin.deploy("segflow-on-upload", returns=b'{"records": 1}')
        yield standin
    assert standin.errors == []


def test_many_async_invocations_share_one_connection(fc: FcStandIn) -> None:
    events = [f'{{"n": {i}}}'.encode() for i in range(20)]

    with FcClient(TEST_STS_CREDENTIALS, fc.url) as client:
        results = [client.invoke("segflow-on-upload", event, asynchronous=True) for event in events]

    assert {r.status for r in results} == {202}
    assert [r.request_id for r in results] == [i.request_id for i in fc.invocations]
    assert [i.event for i in fc.invocations] == events
    assert all(r.body == b"" and not r.function_failed for r in results)
    assert len({r.peer_port for r in fc.requests}) == 1  # one kept-alive connection
    assert {r.signature_error for r in fc.requests} == {None}  # a fresh nonce each time


def test_sync_result_carries_status_body_request_id_and_log(fc: FcStandIn) -> None:
    fc.deploy("segflow-on-upload", returns=b"done", log="line 1\nline 2\n")

    with FcClient(TEST_CREDENTIALS, fc.url) as client:
        result = client.invoke("segflow-on-upload", b"{}", qualifier="LATEST", log_tail=True)

    assert (result.status, result.body, result.log_tail) == (200, b"done", "line 1\nline 2\n")
    assert result.request_id == fc.invocations[0].request_id
    assert fc.requests[0].query == {"qualifier": "LATEST"}


def test_api_error_carries_code_status_and_request_id(fc: FcStandIn) -> None:
    with FcClient(TEST_CREDENTIALS, fc.url) as client, pytest.raises(CloudApiError) as caught:
        client.invoke("segflow-on-upload", b"{}", qualifier="no-such-alias")

    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("AliasNotFound", 404, False)
    assert error.request_id and len(error.request_id) == 36


def test_unreachable_endpoint_is_a_retryable_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused

        with (
            FcClient(TEST_CREDENTIALS, f"http://127.0.0.1:{port}") as client,
            pytest.raises(CloudApiError) as caught,
        ):
            client.invoke("segflow-on-upload", b"{}")

    assert (caught.value.code, caught.value.retryable) == ("ConnectionError", True)


@pytest.mark.parametrize("creds", [TEST_CREDENTIALS, TEST_STS_CREDENTIALS], ids=["plain", "sts"])
def test_caller_account_id_asks_sts_get_caller_identity(fc: FcStandIn, creds: object) -> None:
    assert caller_account_id(creds, endpoint=fc.url) == ACCOUNT_ID  # type: ignore[arg-type]

    [request] = fc.requests
    assert (request.api, request.method, request.path, request.query, request.body) == (
        "sts",
        "POST",
        "/",
        {},
        b"",
    )
    assert request.headers["x-acs-version"] == "2015-04-01"
    assert request.signature_error is None


def test_caller_account_id_reports_the_sts_error(fc: FcStandIn) -> None:
    from segflow.signing import Credentials

    with pytest.raises(CloudApiError) as caught:
        caller_account_id(Credentials("unknown-key-id", "whatever-secret"), endpoint=fc.url)

    assert (caught.value.code, caught.value.http_status) == ("InvalidAccessKeyId.NotFound", 404)
    assert caught.value.request_id and caught.value.host_id == "sts.aliyuncs.com"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://{account_id}.{region}.fc.aliyuncs.com", f"https://{ACCOUNT_ID}.cn-beijing.fc.aliyuncs.com"),
        (
            "{account_id}.{region}-internal.fc.aliyuncs.com",
            f"https://{ACCOUNT_ID}.cn-beijing-internal.fc.aliyuncs.com",
        ),
        ("http://127.0.0.1:9000/", "http://127.0.0.1:9000"),
    ],
)
def test_endpoint_template(template: str, expected: str) -> None:
    assert fc_endpoint(template, region="cn-beijing", account_id=ACCOUNT_ID) == expected


@pytest.mark.parametrize(
    ("template", "region", "account_id"),
    [
        ("https://{account_id}.{region}.fc.aliyuncs.com", "cn-shanghai", "123.evil.example/"),
        ("https://{account_id}.{region}.fc.aliyuncs.com", "cn-shanghai", None),
        ("https://{account_id}.{region}.fc.aliyuncs.com", "cn shanghai", ACCOUNT_ID),
        ("https://fc.example/some/path", "cn-shanghai", ACCOUNT_ID),
        ("ftp://fc.example", "cn-shanghai", ACCOUNT_ID),
    ],
    ids=["account-not-digits", "account-missing", "region", "path", "scheme"],
)
def test_malformed_endpoint_parts_are_config_errors(
    template: str, region: str, account_id: str | None
) -> None:
    with pytest.raises(ConfigError):
        fc_endpoint(template, region=region, account_id=account_id)
