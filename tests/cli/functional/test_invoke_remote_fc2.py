"""`segflow invoke --remote --service S`: functions of FC 2.0 services, through the real aliyun-fc2 SDK
over loopback HTTP to a stand-in that checks the FC 2.0 path and its `FC` signature scheme (see
tests/support/fc_standin.py for the documents it encodes)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from segflow_cli.main import main
from tests.conftest import EVENTS_DIR
from tests.support.fake_api import TEST_STS_CREDENTIALS
from tests.support.fc_standin import ACCOUNT_ID, FcStandIn

EVENT = EVENTS_DIR / "oss-put-image.json"
LOG = "FC Invoke Start RequestId: 2\nFC Invoke End RequestId: 2\n"
SECRETS = (TEST_STS_CREDENTIALS.access_key_secret, str(TEST_STS_CREDENTIALS.security_token))


@pytest.fixture
def fc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FcStandIn]:
    for name in ("ALIBABA_CLOUD_ACCOUNT_ID", "SEGFLOW_REGION", "SEGFLOW_FC_ENDPOINT", "SEGFLOW_STS_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", TEST_STS_CREDENTIALS.access_key_id)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", TEST_STS_CREDENTIALS.access_key_secret)
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", str(TEST_STS_CREDENTIALS.security_token))
    with FcStandIn() as standin:
        standin.deploy(
            "segflow-on-upload",
            service="segflow",
            returns=b'{"records": 1}',
            log=LOG,
            qualifiers=frozenset({"LATEST", "prod"}),
        )
        yield standin
    assert standin.errors == []


def run(capsys: pytest.CaptureFixture[str], fc: FcStandIn, *extra: str) -> tuple[int, str, str]:
    argv = ["invoke", "on_upload", str(EVENT), "--remote", "--endpoint", fc.url, "--service", "segflow"]
    status = main([*argv, *extra])
    out, err = capsys.readouterr()
    assert not any(secret in out + err for secret in SECRETS)
    return status, out, err


def test_service_selects_the_fc2_path_and_signature(
    fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, fc, "--log")

    assert status == 0
    assert json.loads(out) == {"records": 1}
    assert "FC Invoke Start RequestId: 2" in err
    [request] = fc.requests
    assert request.api == "fc2" and request.signature_error is None
    assert request.path == "/2016-08-15/services/segflow/functions/segflow-on-upload/invocations"
    assert request.headers["authorization"].startswith(f"FC {TEST_STS_CREDENTIALS.access_key_id}:")
    assert request.headers["x-fc-security-token"] == TEST_STS_CREDENTIALS.security_token
    [invocation] = fc.invocations
    assert (invocation.invocation_type, invocation.log_type) == ("Sync", "Tail")
    assert invocation.event == EVENT.read_bytes()


def test_qualifier_goes_after_the_service_name(fc: FcStandIn, capsys: pytest.CaptureFixture[str]) -> None:
    status, _, _ = run(capsys, fc, "--qualifier", "prod")

    assert status == 0
    assert fc.requests[0].path == "/2016-08-15/services/segflow.prod/functions/segflow-on-upload/invocations"
    assert fc.invocations[0].qualifier == "prod"


def test_async_through_fc2_prints_the_request_id(fc: FcStandIn, capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(capsys, fc, "--async")

    assert status == 0
    [invocation] = fc.invocations
    assert invocation.invocation_type == "Async"
    assert json.loads(out) == {"invocation": "Async", "requestId": invocation.request_id}


def test_function_error_through_fc2_exits_1(fc: FcStandIn, capsys: pytest.CaptureFixture[str]) -> None:
    fc.deploy("segflow-on-upload", service="segflow", raises=("ValueError", "boom"))

    status, _, err = run(capsys, fc)

    assert status == 1
    assert f"ValueError: boom [RequestId {fc.invocations[0].request_id}]" in err


def test_unknown_function_through_fc2_names_the_code(
    fc: FcStandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(capsys, fc, "--function", "not-deployed")

    assert status == 1
    assert "HTTP 404 FunctionNotFound: function 'not-deployed' does not exist" in err


def test_wrong_secret_through_fc2_is_refused(
    fc: FcStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-secret")

    status, _, err = run(capsys, fc)

    assert status == 1
    assert "HTTP 403 SignatureNotMatch" in err
    assert [r.signature_error for r in fc.requests] == ["SignatureNotMatch"]


def test_fc2_uses_the_account_endpoint_too(
    fc: FcStandIn, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Through the stand-in as an HTTP proxy: fc2 signs and sends Host <account>.<region>.fc.aliyuncs.com."""
    monkeypatch.setenv("HTTP_PROXY", fc.url)
    monkeypatch.setenv("SEGFLOW_FC_ENDPOINT", "http://{account_id}.{region}.fc.aliyuncs.com")
    argv = ["invoke", "on_upload", str(EVENT), "--remote", "--service", "segflow", "--account-id", ACCOUNT_ID]

    assert main(argv) == 0
    [request] = fc.requests
    assert request.via_proxy and request.signature_error is None
    assert request.headers["host"] == f"{ACCOUNT_ID}.cn-shanghai.fc.aliyuncs.com"
