"""`segflow invoke --remote` against a pytest-mock stub of `fc2.Client` (no network in unit tests)."""

from __future__ import annotations

import base64
import json
from typing import Any

import fc2
import pytest
from pytest_mock import MockerFixture

from segflow_cli.cli import main
from tests.conftest import EVENTS_DIR

EVENT = EVENTS_DIR / "oss-put-image.json"


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "STS.remote-id")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "remote-secret-value")
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-remote-token")
    monkeypatch.delenv("SEGFLOW_REGION", raising=False)


@pytest.fixture
def client(mocker: MockerFixture) -> Any:
    client_class = mocker.patch("fc2.Client", autospec=True)
    instance = client_class.return_value
    instance.invoke_function.return_value = fc2.client.FcHttpResponse(
        {"x-fc-log-result": base64.b64encode(b"FC Invoke Start RequestId: 1\n").decode()},
        json.dumps({"records": 1, "done": 1}).encode(),
    )
    return client_class


@pytest.mark.usefixtures("credentials")
def test_remote_invoke_sends_the_event_file_synchronously(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["invoke", "on_upload", str(EVENT), "--remote", "--account-id", "1234567890123456", "--log"]
    )
    captured = capsys.readouterr()
    assert status == 0
    client.assert_called_once_with(
        endpoint="https://1234567890123456.cn-shanghai.fc.aliyuncs.com",
        accessKeyID="STS.remote-id",
        accessKeySecret="remote-secret-value",
        securityToken="CAIS-remote-token",
    )
    client.return_value.invoke_function.assert_called_once_with(
        "default",
        "segflow-on-upload",
        payload=EVENT.read_bytes(),
        headers={"x-fc-invocation-type": "Sync", "x-fc-log-type": "Tail"},
        qualifier=None,
    )
    assert json.loads(captured.out) == {"records": 1, "done": 1}
    assert "FC Invoke Start" in captured.err


@pytest.mark.usefixtures("credentials")
def test_remote_invoke_takes_function_service_region_and_qualifier(client: Any) -> None:
    argv = [
        "invoke", "collect_jobs", str(EVENTS_DIR / "timer.json"), "--remote", "--account-id", "42",
        "--region", "cn-hangzhou", "--function", "my-collector",
        "--service", "segflow", "--qualifier", "prod",
    ]  # fmt: skip
    assert main(argv) == 0
    assert client.call_args.kwargs["endpoint"] == "https://42.cn-hangzhou.fc.aliyuncs.com"
    call = client.return_value.invoke_function.call_args
    assert call.args == ("segflow", "my-collector")
    assert call.kwargs["qualifier"] == "prod" and call.kwargs["headers"] == {"x-fc-invocation-type": "Sync"}


@pytest.mark.usefixtures("credentials")
def test_function_error_is_reported_with_a_non_zero_status(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    client.return_value.invoke_function.side_effect = fc2.fc_exceptions.FcError(
        '{"errorMessage": "boom"}', 500, "UnhandledInvocationError", "req-1"
    )
    assert main(["invoke", "on_upload", str(EVENT), "--remote", "--account-id", "42"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 500" in err and "UnhandledInvocationError" in err and "req-1" in err


def test_remote_without_credentials_is_a_clear_usage_error(
    client: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    assert main(["invoke", "on_upload", str(EVENT), "--remote", "--account-id", "42"]) == 2
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in capsys.readouterr().err
    client.assert_not_called()


@pytest.mark.usefixtures("credentials")
def test_remote_without_account_id_is_a_usage_error(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["invoke", "on_upload", str(EVENT), "--remote"]) == 2
    assert "--account-id" in capsys.readouterr().err
    client.assert_not_called()


@pytest.mark.usefixtures("credentials")
def test_secret_never_reaches_output(client: Any, capsys: pytest.CaptureFixture[str]) -> None:
    main(["invoke", "on_upload", str(EVENT), "--remote", "--account-id", "42", "--log"])
    captured = capsys.readouterr()
    assert "remote-secret-value" not in captured.out + captured.err
    assert "CAIS-remote-token" not in captured.out + captured.err


def test_importing_the_invoke_module_stays_light() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO_ROOT

    code = (
        "import sys, segflow_cli.invoke;"
        "heavy = [m for m in ('fc2', 'oss2', 'requests', 'segflow.services') if m in sys.modules];"
        "sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(REPO_ROOT / "shared")},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
