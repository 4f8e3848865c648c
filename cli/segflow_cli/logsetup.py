"""The command's console log: segflow's own log lines on stderr, at `SEGFLOW_LOG_LEVEL`, `DEBUG` with -v.

Each of segflow_cli's commands names its default level (`CONSOLE_LOG_LEVEL`: `invoke` shows the function's
INFO lines as FC's log would, the others only warnings). Other libraries stay at WARNING. Secrets are
redacted from every line whatever the level (`segflow.logs.install_redaction`, installed by each command
with the secrets it holds).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping

FORMAT = "%(levelname)s %(name)s %(message)s"
OWN_LOGGERS = ("segflow", "segflow_cli")


def add_verbose(parser: argparse._ActionsContainer, what: str = "") -> None:
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help=f"segflow's log lines at DEBUG on stderr{what} (SEGFLOW_LOG_LEVEL sets another level)",
    )


def configure(*, verbose: bool, environ: Mapping[str, str], default: str) -> str:
    """Set the console level of segflow's loggers (and a stderr handler if logging has none); returns it.
    A bad `SEGFLOW_LOG_LEVEL` raises `ConfigError` naming it."""
    from segflow.settings import log_level

    level = "DEBUG" if verbose else log_level(environ.get("SEGFLOW_LOG_LEVEL"), default)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(level)
    return level
