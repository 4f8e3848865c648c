"""One progress line for `backfill` and `redrive`: objects listed, sent and finished.

On a terminal it is a rich progress bar (its total grows while the listing runs ahead); elsewhere (logs,
CI) a plain line on stderr every `PLAIN_EVERY` seconds and one at the end.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

PLAIN_EVERY = 10.0


class TransferProgress:
    """Counters of a run, shown as they change. Thread-safe."""

    def __init__(self, title: str, *, finished_label: str = "finished", enabled: bool = True) -> None:
        self.title = title
        self.finished_label = finished_label
        self.listed = 0
        self.sent = 0
        self.finished = 0
        self.failed = 0
        self.listing_done = False
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._printed = 0.0
        self._bar: Any = None
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            self._bar = _rich_bar(title)

    def add(self, *, listed: int = 0, sent: int = 0, finished: int = 0, failed: int = 0) -> None:
        with self._lock:
            self.listed += listed
            self.sent += sent
            self.finished += finished
            self.failed += failed
        self._show()

    def listing_ended(self) -> None:
        with self._lock:
            self.listing_done = True
        self._show()

    def status(self) -> str:
        listed = f"{self.listed:,}" + ("" if self.listing_done else "+")
        text = f"listed {listed} · sent {self.sent:,} · {self.finished_label} {self.finished:,}"
        return text + (f" · failed {self.failed:,}" if self.failed else "")

    def _show(self, *, force: bool = False) -> None:
        if not self._enabled:
            return
        if self._bar is not None:
            bar, task = self._bar
            bar.update(task, total=max(self.listed, 1), completed=self.finished, status=self.status())
            return
        now = time.monotonic()
        if force or now - self._printed >= PLAIN_EVERY:
            self._printed = now
            elapsed = now - self._started
            print(f"{self.title}: {self.status()} ({elapsed:.0f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._show()
            self._bar[0].stop()
            self._bar = None
        elif self._enabled:
            self._show(force=True)


def _rich_bar(title: str) -> Any:
    try:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:
        return None
    bar = Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(), console=Console(stderr=True),
    )  # fmt: skip
    bar.start()
    task = bar.add_task(title, total=None, status="listing…")
    return bar, task
