"""The engine's Function Compute package (scripts/build_engine_fc.py): built, unpacked, started as FC would.

    built = build_package(tmp / "engine.zip", "cutout")
    code = unpack(built, tmp / "code")                  # /code on FC: modes kept, bootstrap executable
    with start_instance(code, env={...}) as instance:   # ./bootstrap on Python 3.10, nothing but the package
        instance.url, instance.log()

FC's custom runtime contract ("Custom runtime: principles", fc-engine.md §1): FC unpacks the code package at
/code and starts `customRuntimeConfig.command` (or /code/bootstrap) with the function's environment; the
server must listen on 0.0.0.0 at the configured port (SEGFLOW_ENGINE_PORT here) within 120 seconds. Here
the interpreter is this machine's Python 3.10 (pyenv's 3.10.13), found by the bootstrap as `python3.10` on
PATH because /var/fc/lang/python3.10 does not exist; the process gets a clean environment, so nothing of the
checkout or of the test's virtual environment is importable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO_ROOT

STARTUP_LIMIT_SECONDS = 120.0  # FC: the HTTP server must be ready within 120 s
STOP_SECONDS = 20.0


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_engine_fc", REPO_ROOT / "scripts" / "build_engine_fc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_engine_fc", module)  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return sys.modules["build_engine_fc"]


def python310() -> str:
    """This machine's Python 3.10 (the runtime's version), or skip: the package targets cp310."""
    layer_builder = load_builder()._load("build_layer", REPO_ROOT / "scripts" / "build_layer.py")
    found: str | None = layer_builder.find_python310()
    if found is None:
        pytest.skip("no Python 3.10 here (PYTHON310, python3.10 or pyenv's): the package is for CPython 3.10")
    return found


def build_package(out: Path, actions: str = "all", **options: object) -> Path:
    """Build from the wheels `make test` fetched (tests reach nothing beyond loopback, so never PyPI)."""
    builder = load_builder()
    missing = [
        pin.requirement
        for pin in builder.read_pins()
        if builder._cached_wheel(pin, builder.WHEEL_CACHE) is None
    ]
    if missing:
        pytest.skip(f"the engine package's wheels are not fetched ({len(missing)} missing): run `make test`")
    builder.build(out, actions, python310=python310(), **options)
    return out


def unpack(package: Path, code: Path) -> Path:
    """Unzip as FC does, applying each entry's Unix mode (Python's zipfile alone drops them)."""
    with zipfile.ZipFile(package) as archive:
        for info in archive.infolist():
            target = Path(archive.extract(info, code))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)
    return code


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Instance:
    """One engine process started from the package."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_SECONDS)


def fc_environment(code: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the process sees: a PATH with python3.10 on it, the port, and the test's variables."""
    interpreter_dir = code.parent / "python310-bin"
    interpreter_dir.mkdir(exist_ok=True)
    link = interpreter_dir / "python3.10"
    if not link.exists():
        link.symlink_to(python310())
    return {
        "PATH": f"{interpreter_dir}:/usr/bin:/bin",
        "HOME": str(code.parent),
        "TMPDIR": str(code.parent),
        "SEGFLOW_ENGINE_PORT": str(port),
        **(extra or {}),
    }


@contextlib.contextmanager
def start_instance(
    code: Path, env: Mapping[str, str] | None = None, args: Sequence[str] = ()
) -> Iterator[Instance]:
    """`./bootstrap [args]` in its own process group (FC passes `customRuntimeConfig.args` so); waits (at
    most FC's 120 s) until it accepts connections."""
    port = free_port()
    log_path = code.parent / f"instance-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(code / "bootstrap"), *args],
            cwd=code,
            env=fc_environment(code, port, env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    instance = Instance(process, port, log_path)
    try:
        _wait_until_listening(instance)
        yield instance
    finally:
        instance.stop()


def _wait_until_listening(instance: Instance) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise AssertionError(f"the engine exited ({instance.process.returncode}):\n{instance.log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", instance.port), 0.5):
            return
        time.sleep(0.2)
    raise AssertionError(f"not listening within {STARTUP_LIMIT_SECONDS:g} s:\n{instance.log()}")
