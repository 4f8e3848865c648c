"""The local engine as a child process of the `segflow` command (`segflow run` starts and stops it).

The command talks only to the engine it started: a port given by the user must be free before the engine
starts, and once something answers on the port it must prove to be that engine, by accepting a call
signed with the AccessKey generated for this run alone (`prove_own_engine`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from segflow.errors import ConfigError

PROBE_JOB = "segflow-engine-identity-probe"
"""A job id no engine knows: the engine that verifies this run's signature answers `InvalidParameter`."""


class EngineStartError(ConfigError):
    """The local engine could not be started, or what answers on its port is not the engine started."""

    default_code = "EngineNotStarted"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(port: int) -> None:
    """Refuse a port something already listens on (binding it is the test that cannot lie)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise EngineStartError(
                f"port {port} is in use ({exc.strerror}; another `segflow engine`?): stop what listens "
                "there, or leave out --port to use a free one",
                code="PortInUse",
            ) from exc


@contextlib.contextmanager
def local_engine(
    port: int, state_dir: Path, access_key: tuple[str, str], appcode: str, *, debug: bool = False
) -> Iterator[str]:
    """`segflow engine` in a child process on 127.0.0.1:<port> (`debug`: its log at DEBUG); yields its
    base URL, stops it after."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "engine.log"
    env = dict(os.environ)
    env["SEGFLOW_ENGINE_ACCESS_KEYS"] = f"{access_key[0]}:{access_key[1]}"
    env["SEGFLOW_ENGINE_APPCODES"] = appcode
    command = [
        sys.executable, "-m", "segflow_cli", "engine",
        "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state_dir / "results"),
        *(["--log-level", "debug"] if debug else []),
    ]  # fmt: skip
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_listening(process, port, log_path, timeout=180.0)
        prove_own_engine(base_url, access_key)
        if process.poll() is not None:  # it answered for a moment, then died: not an engine to talk to
            raise EngineStartError(f"the local engine exited with status {process.returncode} ({log_path})")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def engine_environment(base_url: str, access_key: tuple[str, str], appcode: str) -> dict[str, str]:
    """The variables that point the handlers at a local engine started with these keys."""
    return {
        "SEGFLOW_IMAGESEG_ENDPOINT": base_url,
        "SEGFLOW_VIDEOSEG_ENDPOINT": base_url,
        "SEGFLOW_PICWISH_ENDPOINT": base_url,
        # The engine also serves AuthorizeFileUpload and its temporary bucket, so inputs reach it the
        # way they reach the cloud service by default (SEGFLOW_INPUT_URL=upload).
        "SEGFLOW_OPENPLATFORM_ENDPOINT": base_url,
        "SEGFLOW_PICWISH_APPCODE": appcode,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": access_key[0],
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": access_key[1],
        "SEGFLOW_REQUIRE_REGION": "false",
    }


def engine_keys() -> tuple[tuple[str, str], str]:
    """A fresh development AccessKey pair and AppCode for one local engine."""
    import secrets

    return (f"LTAIlocal{secrets.token_hex(6)}", secrets.token_urlsafe(24)), secrets.token_hex(16)


def _die_with_parent() -> None:
    """In the child: ask Linux to SIGTERM the engine when `segflow run` dies, however it dies."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _wait_until_listening(
    process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
            raise EngineStartError(f"the local engine exited with status {process.returncode}:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.2)
    raise EngineStartError(
        f"the local engine did not listen on port {port} within {timeout:.0f} s ({log_path})"
    )


def prove_own_engine(base_url: str, access_key: tuple[str, str]) -> None:
    """What answers at `base_url` verifies this run's key (its answer to an unknown job), or it is
    another program (another engine answers `InvalidAccessKeyId.NotFound`): raises `EngineStartError`."""
    from segflow.client import Endpoints, VisionClient
    from segflow.errors import SegflowError
    from segflow.ratelimit import RateLimiter
    from segflow.retry import RetryPolicy
    from segflow.signing import Credentials

    client = VisionClient(
        Credentials(*access_key),
        endpoints=Endpoints(base_url, base_url, base_url, base_url),
        retry=RetryPolicy(max_attempts=1),
        rate_limiter=RateLimiter(1000.0),
        timeout=10.0,
    )
    try:
        client.get_async_job_result(PROBE_JOB, product="imageseg")
    except SegflowError as error:
        if error.code == "InvalidParameter":
            return  # it checked this run's signature, then looked for the job: the engine started here
        raise EngineStartError(
            f"{base_url} answered, but not as the engine this command started ({error.code}: "
            f"{error.message}); another program holds the port",
            code="NotOurEngine",
        ) from error
    raise EngineStartError(f"{base_url} answered a job no engine has: not the engine this command started")
