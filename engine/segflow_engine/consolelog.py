"""Where `segflow engine` writes: segflow's own lines on the console, everything else in the engine log.

The native libraries under the models (TensorFlow Lite, MediaPipe's C++ and absl) write straight to file
descriptor 2, about ten `W0000 …` lines at start. Unless the user asks for `--verbose` (or
`--log-level debug`), descriptor 2 becomes the engine log file and the console keeps a copy of the
terminal's stderr for segflow's own lines (`sys.stderr` and the `segflow_engine` loggers); every logger
(segflow's, waitress, absl-py, Python warnings) also writes to the log file.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def route_logs(level: str, log_file: Path, *, verbose: bool) -> None:
    """Send the engine's loggers to the console at `level`, the rest as the module docstring says. Does
    nothing when the process set up logging already (a test, an app that embeds the engine)."""
    root = logging.getLogger()
    if root.handlers:
        return
    console = sys.stderr if verbose else _keep_console_and_redirect_stderr(log_file)
    own = logging.getLogger("segflow_engine")
    own.setLevel(level.upper())
    own.addHandler(_handler(logging.StreamHandler(console)))
    logging.captureWarnings(True)
    if verbose:
        # Other libraries' warnings on the console too; never urllib3's DEBUG (it prints URLs whole,
        # signatures included).
        root.setLevel(logging.WARNING)
        root.addHandler(_handler(logging.StreamHandler(console)))
        return
    root.setLevel(logging.INFO)
    root.addHandler(_handler(logging.FileHandler(log_file, encoding="utf-8")))


def _keep_console_and_redirect_stderr(log_file: Path) -> TextIO:
    """A copy of the terminal's stderr, now `sys.stderr`; descriptor 2 itself appends to `log_file`."""
    sys.stderr.flush()
    console = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stderr = console
    return console


def _handler(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(logging.Formatter(FORMAT))
    return handler
