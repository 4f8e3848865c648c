"""`segflow engine`: loopback by default, light to import, needs its models, serves until stopped.

GIVEN the `segflow engine` command
WHEN  it is parsed, imported, started without models, or started for real and sent SIGTERM
THEN  it binds 127.0.0.1:8780 by default, imports nothing heavy, names `make setup` when models are missing,
      prints the dev key pair it accepts, and stops cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from segflow.errors import ConfigError
from segflow.signing import Credentials, sign_v1
from segflow_engine import command as cli
from segflow_engine.auth import EngineCredentials, parse_access_keys, parse_appcodes
from segflow_engine.limits import ServerLimits
from tests.conftest import REPO_ROOT, SOURCE_ROOTS
from tests.support.engine_server import engine_process


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_defaults_bind_loopback_port_8780() -> None:
    args = _parse()
    assert (args.host, args.port, args.workers, args.state_dir) == ("127.0.0.1", 8780, 2, None)


def test_options_are_parsed() -> None:
    args = _parse("--host", "0.0.0.0", "--port", "9000", "--workers", "4", "--state-dir", "/tmp/x")
    assert (args.host, args.port, args.workers, args.state_dir) == ("0.0.0.0", 9000, 4, Path("/tmp/x"))


def test_http_limits_default_to_the_servers_and_are_parsed() -> None:
    assert cli.server_limits(_parse()) == ServerLimits()
    limits = cli.server_limits(
        _parse(
            "--http-threads", "8", "--max-connections", "64", "--backlog", "16", "--idle-timeout", "900",
        )
    )  # fmt: skip
    assert (limits.threads, limits.max_connections, limits.backlog) == (8, 64, 16)
    assert limits.idle_timeout == 900  # Function Compute's custom runtimes need 15 minutes or more


@pytest.mark.parametrize(
    "option",
    [("--http-threads", "0"), ("--max-connections", "0"), ("--idle-timeout", "0"), ("--backlog", "-1")],
)
def test_non_positive_http_limits_are_refused(
    option: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(_parse("--port", "0", *option)) == 2
    assert f"{option[0]} must be" in capsys.readouterr().err


def test_importing_the_command_loads_no_heavy_module() -> None:
    code = (
        "import sys, segflow_engine.command; "
        "heavy = [m for m in ('numpy', 'PIL', 'onnxruntime', 'mediapipe', 'av', 'segflow_engine.server', "
        "'waitress', 'requests') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env())
    assert out.stdout.strip() == "[]"


def test_refuses_to_start_without_models_and_names_make_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGFLOW_MODEL_DIR", str(tmp_path))  # an empty model folder
    assert cli.run(_parse("--port", "0")) == 2
    err = capsys.readouterr().err
    assert "make setup" in err


def test_refuses_malformed_access_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("segflow_engine.models.check_installed", lambda *a, **k: None)
    monkeypatch.setenv("SEGFLOW_ENGINE_ACCESS_KEYS", "only-an-id")
    assert cli.run(_parse("--port", "0")) == 2
    assert "SEGFLOW_ENGINE_ACCESS_KEYS" in capsys.readouterr().err


def test_refuses_to_trust_a_gateway_outside_function_compute(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SEGFLOW_ENGINE_AUTH=fc-gateway takes every call as signed: only FC's trigger may stand in front."""
    monkeypatch.setattr("segflow_engine.models.check_installed", lambda *a, **k: None)
    monkeypatch.setenv("SEGFLOW_ENGINE_AUTH", "fc-gateway")
    for name in ("FC_FUNCTION_NAME", "FC_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert cli.run(_parse("--port", "0")) == 2
    assert "this is not Function Compute" in capsys.readouterr().err


def test_access_keys_and_appcodes_are_read_from_their_variables() -> None:
    assert parse_access_keys(" id1:secret1 , id2:se:cret2 ,") == {"id1": "secret1", "id2": "se:cret2"}
    assert parse_appcodes("a, b,,") == frozenset({"a", "b"})
    with pytest.raises(ConfigError):
        parse_access_keys("id-without-secret")
    configured = EngineCredentials.from_env(
        {"SEGFLOW_ENGINE_ACCESS_KEYS": "k:s", "SEGFLOW_ENGINE_APPCODES": "c"}
    )
    assert dict(configured.access_keys) == {"k": "s"}
    assert configured.appcodes == frozenset({"c"})
    assert not configured.generated_keys
    generated = EngineCredentials.from_env({})
    assert generated.generated_keys and generated.generated_appcodes
    assert len(generated.access_keys) == 1
    assert generated.first_key[1] not in repr(generated)
    assert generated.first_appcode not in repr(generated)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [*map(str, SOURCE_ROOTS), str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.engine
def test_command_serves_with_its_printed_dev_key_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_port()
    env = _env()
    env.pop("SEGFLOW_ENGINE_ACCESS_KEYS", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "segflow_cli", "engine", "--port", str(port), "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        lines: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "AccessKeySecret" not in lines:
            line = process.stdout.readline()
            if not line:
                break
            parts = line.split()
            if len(parts) == 2 and parts[0] in ("AccessKeyId", "AccessKeySecret"):
                lines[parts[0]] = parts[1]
        assert set(lines) == {"AccessKeyId", "AccessKeySecret"}, "the dev key pair was not printed"

        credentials = Credentials(lines["AccessKeyId"], lines["AccessKeySecret"])
        params = {"Action": "GetAsyncJobResult", "Version": "2020-03-20", "JobId": "nope"}
        signed = sign_v1("GET", params, credentials)
        response = requests.get(f"http://127.0.0.1:{port}/", params=signed.params, timeout=10)
        assert response.status_code == 400
        assert response.json()["Code"] == "InvalidParameter"  # signed correctly, no such job
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/", timeout=2)


NATIVE_LINES = ("W0000", "TensorFlow Lite")  # MediaPipe's C++ (absl) and TF Lite, written to descriptor 2


@pytest.mark.engine
def test_the_console_keeps_to_segflows_lines_and_the_libraries_go_to_the_engine_log(tmp_path: Path) -> None:
    """Issue 18: loading the models printed about ten `W0000 …` lines at warning level. They go to the
    engine log (`<state-dir>/engine.log` here); the console shows segflow's own lines."""
    with engine_process(tmp_path) as running:
        banner = list(running.banner)
        err = running.stop()
    log = (tmp_path / "engine.log").read_text(encoding="utf-8", errors="replace")
    assert not [line for line in err.splitlines() if any(n in line for n in NATIVE_LINES)], err
    assert err.strip() == "segflow engine: stopping (running model work finishes first)"
    assert any(n in log for n in NATIVE_LINES)
    assert banner[0].startswith("segflow engine: models loaded in")


@pytest.mark.engine
@pytest.mark.parametrize("option", [("--verbose",), ("--log-level", "debug")])
def test_verbose_puts_the_libraries_lines_on_the_console(tmp_path: Path, option: tuple[str, ...]) -> None:
    with engine_process(tmp_path, *option) as running:
        err = running.stop()
    assert any(n in err for n in NATIVE_LINES)
    assert not (tmp_path / "engine.log").exists()
