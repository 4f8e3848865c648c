"""`python -m segflow_engine.fc`, what the Function Compute package's bootstrap runs (fc-engine.md §1).

FC's custom runtime: the server must bind 0.0.0.0 (127.0.0.1 is never reached: "Ping CA failed"), and keep
connections with an idle timeout of at least 15 minutes (else "Process exited unexpectedly" / 502).
"""

from __future__ import annotations

import pytest

from segflow_engine import fc, served
from segflow_engine.command import server_limits


def test_fc_defaults_bind_every_address_and_keep_connections_over_15_minutes() -> None:
    args = fc.parse_args(["--port", "9000"])
    assert (args.host, args.port, args.log_level) == ("0.0.0.0", 9000, "info")
    assert args.workers == 1  # a second model call at once gains nothing on 2 vCPU (bench/engine_fc.py)
    assert server_limits(args).idle_timeout >= 15 * 60


def test_options_given_after_the_defaults_win() -> None:
    args = fc.parse_args(["--port", "9000", "--workers", "2", "--idle-timeout", "1200"])
    assert (args.workers, server_limits(args).idle_timeout) == (2, 1200.0)


def test_a_bad_action_list_stops_the_start_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        served, "served_actions", lambda: served.actions_from_env({"SEGFLOW_ENGINE_ACTIONS": "x"})
    )
    assert fc.main(["--port", "0"]) == 2
    assert "no action or group named 'x'" in capsys.readouterr().err
