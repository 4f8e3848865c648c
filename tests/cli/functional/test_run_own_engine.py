"""`segflow run` talks only to the engine it started (issue 18, bug 1).

GIVEN another `segflow engine` (or any program) already listening on a port
WHEN `segflow run --port <that port>` starts, or its engine's port is taken while it starts
THEN it refuses at once, naming the port, or finds that what answers does not verify this run's own
     AccessKey — it never sends an input to an engine it did not start.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segflow_cli.localengine import EngineStartError, engine_keys, local_engine, prove_own_engine
from segflow_cli.main import main
from tests.support.engine_server import RunningEngine, StubActions, start_engine


@pytest.fixture
def other_engine() -> Iterator[RunningEngine]:
    """A `segflow engine` someone started earlier, with its own keys (stub models: no weights needed)."""
    with start_engine(actions=StubActions()) as engine:
        yield engine


@pytest.mark.timeout(30)
def test_a_port_in_use_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "me.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        status = main(["run", str(photo), "--port", str(port), "--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert status == 2 and f"port {port} is in use" in err, out + err
    assert time.monotonic() - started < 5  # at once: no engine was started, nothing waited for
    assert not (tmp_path / "out" / ".engine").exists() and "starting the local engine" not in out


def test_the_engine_a_run_talks_to_must_verify_the_runs_own_key(
    other_engine: RunningEngine, tmp_path: Path
) -> None:
    access_key, appcode = engine_keys()  # what a run generates for the engine it starts
    with (
        pytest.raises(EngineStartError) as refused,
        local_engine(other_engine.port, tmp_path / ".engine", access_key, appcode),
    ):
        pytest.fail("local_engine yielded an engine it did not start")
    assert refused.value.code in ("NotOurEngine", "EngineNotStarted"), refused.value


def test_another_engine_is_told_apart_from_the_one_that_has_the_key(other_engine: RunningEngine) -> None:
    prove_own_engine(other_engine.base_url, (other_engine.access_key_id, other_engine.access_key_secret))
    with pytest.raises(EngineStartError) as refused:
        prove_own_engine(other_engine.base_url, engine_keys()[0])
    assert refused.value.code == "NotOurEngine" and "InvalidAccessKeyId.NotFound" in refused.value.message
