"""`segflow invoke --remote`: the usage errors (exit 2, before any request) and the pure parts of
`segflow_cli.fcapi`. The invocations themselves run against loopback stand-ins in
tests/cli/functional/test_invoke_remote_fc3.py, test_invoke_remote_fc2.py and test_fcapi_*.py."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from segflow_cli.fcapi import decode_log_tail, error_from_response
from segflow_cli.main import main
from tests.conftest import EVENTS_DIR

EVENT = str(EVENTS_DIR / "oss-put-image.json")


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.remote-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "remote-secret-value")
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-remote-token")
    for name in (
        "SEGFLOW_REGION",
        "SEGFLOW_FC_ENDPOINT",
        "ALIBABA_CLOUD_ACCOUNT_ID",
        "SEGFLOW_LOCAL_BUCKET_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def usage_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "remote-secret-value" not in err and "CAIS-remote-token" not in err
    return err


def test_remote_without_credentials_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ):
        monkeypatch.delenv(name)

    err = usage_error(capsys, ["invoke", "on_upload", EVENT, "--remote", "--account-id", "42"])

    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in err


def test_log_needs_a_synchronous_invocation(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(
        capsys, ["invoke", "on_upload", EVENT, "--remote", "--async", "--log", "--account-id", "42"]
    )

    assert "--log" in err and "--async" in err


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--account-id", "12a4"], "account id"),
        (["--account-id", "42", "--region", "CN_Shanghai"], "region"),
        (["--endpoint", "https://fc.example/with/a/path"], "endpoint"),
    ],
    ids=["account-id", "region", "endpoint"],
)
def test_malformed_endpoint_parts_are_usage_errors(
    capsys: pytest.CaptureFixture[str], extra: list[str], named: str
) -> None:
    assert named in usage_error(capsys, ["invoke", "on_upload", EVENT, "--remote", *extra])


def test_remote_options_without_remote_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(
        capsys, ["invoke", "on_upload", EVENT, "--bucket-dir", ".", "--async", "--service", "s"]
    )

    assert "--service, --async only apply with --remote" in err


def test_help_describes_the_remote_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["invoke", "--help"])
    text = " ".join(capsys.readouterr().out.split())

    for expected in (
        "--async",
        "--endpoint",
        "SEGFLOW_FC_ENDPOINT",
        "ALIBABA_CLOUD_ACCOUNT_ID",
        "GetCallerIdentity",
        "FC 2.0 service",
        "synchronous invocations only",
    ):
        assert expected in text


def _response(status: int, body: bytes, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers.update(headers or {})
    return response


def test_fc3_error_json_gives_code_message_and_request_id() -> None:
    """FC docs, API 2023-03-30 data type Error: {Code, Message, RequestId}."""
    body = json.dumps({"Code": "FunctionNotFound", "Message": "function not found", "RequestId": "1-64e7"})

    error = error_from_response(_response(404, body.encode()))

    assert (error.code, error.message, error.http_status, error.request_id) == (
        "FunctionNotFound",
        "function not found",
        404,
        "1-64e7",
    )
    assert not error.retryable


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (502, True), (400, False)])
def test_an_error_without_json_keeps_status_and_request_id_header(status: int, retryable: bool) -> None:
    error = error_from_response(_response(status, b"<html>bad gateway</html>", {"x-fc-request-id": "r-1"}))

    assert (error.http_status, error.request_id, error.retryable) == (status, "r-1", retryable)
    assert "bad gateway" in error.message


def test_log_tail_is_decoded_from_base64() -> None:
    assert decode_log_tail(base64.b64encode("日志 line\n".encode()).decode()) == "日志 line\n"
    assert decode_log_tail(None) is None
    assert decode_log_tail("not base64!") == "not base64!"


def test_importing_the_invoke_module_stays_light() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys, segflow_cli.invoke;"
        "heavy = [m for m in ('fc2', 'oss2', 'requests', 'segflow.services', 'segflow_cli.fcapi')"
        " if m in sys.modules];"
        "sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{REPO_ROOT / 'shared'}:{REPO_ROOT / 'engine'}"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
