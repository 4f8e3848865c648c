"""`segflow invoke --remote` against FC 3.0, end to end: the real command, real HTTP over loopback, a
stand-in that checks what FC 3.0 and STS document (see tests/support/fc_standin.py for the sources)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from segflow_cli.main import main
from tests.conftest import EVENTS_DIR, REPO_ROOT
from tests.support.fake_api import TEST_CREDENTIALS, TEST_STS_CREDENTIALS
from tests.support.fc_standin import ACCOUNT_ID, FcStandIn

EVENT = EVENTS_DIR / "oss-put-image.json"
README_CHECK = [
    "invoke",
    "on_upload",
    "events/oss-put-image.json",
    "--remote",
    "--function",
    "segflow-on-upload",
]
"""The README's check command, word for word."""
LOG = "FC Invoke Start RequestId: 1\nsegflow on_upload: 1 record\nFC Invoke End RequestId: 1\n"
_PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")
_OURS = (
    "ALIBABA_CLOUD_ACCOUNT_ID",
    "SEGFLOW_REGION",
    "SEGFLOW_FC_ENDPOINT",
    "SEGFLOW_STS_ENDPOINT",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
)


@pytest.fixture
def fc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FcStandIn]:
    for name in _OURS + _PROXY_VARS + tuple(n.lower() for n in _PROXY_VARS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", TEST_STS_CREDENTIALS.access_key_id)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", TEST_STS_CREDENTIALS.access_key_secret)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", str(TEST_STS_CREDENTIALS.security_token))
    with FcStandIn() as standin:
        standin.deploy("segflow-on-upload", returns=b'{"records": 1, "submitted": 1}', log=LOG)
        standin.deploy("segflow-collect-jobs", returns=b'{"collected": 0}', qualifiers=frozenset({"prod"}))
        yield standin
    assert standin.errors == []


@pytest.fixture
def direct(fc: FcStandIn, monkeypatch: pytest.MonkeyPatch) -> FcStandIn:
    """The stand-in as the FC endpoint itself (no account id needed then)."""
    monkeypatch.setenv("SEGFLOW_FC_ENDPOINT", fc.url)
    return fc


def route_through(fc: FcStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the real host names ({account_id}.{region}.fc.aliyuncs.com, sts.aliyuncs.com) and let the
    stand-in receive them as a plain-HTTP proxy: what is sent, Host and signature included, is unchanged."""
    monkeypatch.setenv("HTTP_PROXY", fc.url)
    monkeypatch.setenv("SEGFLOW_FC_ENDPOINT", "http://{account_id}.{region}.fc.aliyuncs.com")
    monkeypatch.setenv("SEGFLOW_STS_ENDPOINT", "http://sts.aliyuncs.com")


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    for secret in (TEST_STS_CREDENTIALS.access_key_secret, str(TEST_STS_CREDENTIALS.security_token)):
        assert secret not in out + err
    return status, out, err


def remote(*extra: str, function: str = "on_upload", event: str = str(EVENT)) -> list[str]:
    return ["invoke", function, event, "--remote", *extra]


def test_readme_check_command_runs_as_written(
    fc: FcStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the AccessKey in the environment: the account id comes from STS GetCallerIdentity."""
    route_through(fc, monkeypatch)
    monkeypatch.chdir(REPO_ROOT)

    status, out, _ = run(capsys, README_CHECK)

    assert status == 0
    assert json.loads(out) == {"records": 1, "submitted": 1}
    sts, invoke = fc.requests
    assert (sts.api, sts.headers["host"], sts.signature_error) == ("sts", "sts.aliyuncs.com", None)
    assert (invoke.api, invoke.signature_error, invoke.via_proxy) == ("fc3", None, True)
    assert invoke.headers["host"] == f"{ACCOUNT_ID}.cn-shanghai.fc.aliyuncs.com"
    assert invoke.path == "/2023-03-30/functions/segflow-on-upload/invocations"
    assert invoke.headers["x-acs-security-token"] == TEST_STS_CREDENTIALS.security_token
    [invocation] = fc.invocations
    assert (invocation.invocation_type, invocation.log_type, invocation.qualifier) == ("Sync", "None", None)
    assert invocation.event == EVENT.read_bytes()


@pytest.mark.parametrize(
    ("argv", "env", "account", "asks_sts"),
    [
        (
            ["--account-id", "1111222233334444"],
            {"ALIBABA_CLOUD_ACCOUNT_ID": "5555"},
            "1111222233334444",
            False,
        ),
        ([], {"ALIBABA_CLOUD_ACCOUNT_ID": "5555666677778888"}, "5555666677778888", False),
        ([], {}, ACCOUNT_ID, True),
    ],
    ids=["option", "environment", "sts"],
)
def test_account_id_comes_from_the_option_then_the_environment_then_sts(
    fc: FcStandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    account: str,
    asks_sts: bool,
) -> None:
    route_through(fc, monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    status, _, _ = run(capsys, remote(*argv, "--region", "cn-hangzhou"))

    assert status == 0
    assert [r.api for r in fc.requests] == (["sts", "fc3"] if asks_sts else ["fc3"])
    assert fc.requests[-1].headers["host"] == f"{account}.cn-hangzhou.fc.aliyuncs.com"


def test_sync_invocation_with_qualifier_and_log_tail(
    direct: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = remote(
        "--qualifier", "prod", "--log", function="collect_jobs", event=str(EVENTS_DIR / "timer.json")
    )

    status, out, err = run(capsys, argv)

    assert status == 0
    assert json.loads(out) == {"collected": 0}
    [request] = direct.requests
    assert request.path == "/2023-03-30/functions/segflow-collect-jobs/invocations"
    assert request.query == {"qualifier": "prod"}
    assert request.headers["x-fc-log-type"] == "Tail"
    assert {"x-fc-invocation-type", "x-fc-log-type", "content-type", "host"} <= request.signed_headers
    assert "FC Invoke Start" in err  # decoded from x-fc-log-result


def test_async_invocation_prints_the_request_id(
    direct: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, remote("--async"))

    assert status == 0
    [invocation] = direct.invocations
    assert invocation.invocation_type == "Async"
    assert json.loads(out) == {"invocation": "Async", "requestId": invocation.request_id}


def test_function_error_exits_1_with_the_error_and_the_log(
    direct: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    direct.deploy("segflow-on-upload", raises=("ConfigError", "SEGFLOW_RULES is not valid JSON"), log=LOG)

    status, out, err = run(capsys, remote("--log"))

    assert status == 1
    assert json.loads(out)["errorType"] == "ConfigError"
    [invocation] = direct.invocations
    reason = "UnhandledInvocationError ConfigError: SEGFLOW_RULES is not valid JSON"
    assert f"{reason} [RequestId {invocation.request_id}]" in err
    assert "FC Invoke Start" in err


def test_api_error_names_code_status_and_request_id(
    direct: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, remote("--function", "not-deployed"))

    assert status == 1
    assert out == ""
    assert re.search(r"FunctionNotFound: function not found \(HTTP 404\) \[RequestId [0-9A-F-]{36}\]", err)
    assert direct.invocations == []


def test_a_wrong_secret_is_refused_by_the_signature_check(
    direct: FcStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-secret")

    status, _, err = run(capsys, remote())

    assert status == 1
    assert "SignatureNotMatch" in err and "HTTP 403" in err
    assert [r.signature_error for r in direct.requests] == ["SignatureDoesNotMatch"]
    assert "not-the-secret" not in err


def test_an_fc2_style_name_is_percent_encoded_and_still_verifies(
    direct: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    """FC 2.0 functions show up in the 3.0 API as `service$function` (FC docs, 3.0 vs 2.0)."""
    direct.deploy("segflow$on-upload", returns=b"plain text")

    status, out, _ = run(capsys, remote("--function", "segflow$on-upload"))

    assert (status, out) == (0, "plain text\n")
    assert direct.requests[0].path == "/2023-03-30/functions/segflow%24on-upload/invocations"
    assert direct.requests[0].signature_error is None


def test_plain_keys_send_no_sts_headers(
    direct: FcStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", TEST_CREDENTIALS.access_key_id)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", TEST_CREDENTIALS.access_key_secret)
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN")

    status, _, _ = run(capsys, remote("--endpoint", direct.url))

    assert status == 0
    headers: dict[str, Any] = direct.requests[0].headers
    assert "x-acs-security-token" not in headers and direct.requests[0].signature_error is None


def test_sts_refusal_says_how_to_give_the_account_id(
    fc: FcStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    route_through(fc, monkeypatch)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "unknown-key-id")
    monkeypatch.chdir(REPO_ROOT)

    status, _, err = run(capsys, README_CHECK)

    assert status == 1
    assert "GetCallerIdentity" in err and "InvalidAccessKeyId.NotFound" in err and "--account-id" in err
    assert [r.api for r in fc.requests] == ["sts"]
