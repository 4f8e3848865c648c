"""What `segflow run` shows: a progress bar while it works, a table of outcomes at the end."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class Outcome(Protocol):
    """What the table shows of one input (`segflow_cli.run.InputFile`)."""

    key: str
    action: str
    outcome: str
    code: str
    reason: str
    seconds: float
    manifest_key: str
    preview: str


class Progress:
    """A rich progress bar over files and jobs; plain lines when rich is missing or not a terminal."""

    def __init__(self, total: int) -> None:
        self._bar: Any = None
        try:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
            )  # fmt: skip
            self._bar.start()
            self._task = self._bar.add_task("segflow run", total=total)
        except ImportError:
            self._bar = None

    def update(self, description: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=description)
        else:
            print(description, flush=True)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


def print_table(files: Sequence[Outcome], out: Path) -> None:
    rows = [
        (
            item.key,
            item.action or "-",
            item.outcome if item.outcome == "done" else f"{item.outcome} {item.code}".strip(),
            f"{item.seconds:.1f}s",
            _output_dir(item) if item.outcome == "done" else item.reason,
        )
        for item in files
    ]
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"segflow run — bucket folder {out / 'buckets'}")
        for column in ("file", "action", "outcome", "time", "output / reason"):
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console = Console()
        if not console.is_terminal:  # logs and CI: wide enough that keys are not folded
            console = Console(width=200)
        console.print(table)
    except ImportError:
        for row in rows:
            print("  ".join(row))
    previews = [item.preview for item in files if item.preview and item.outcome == "done"]
    if previews:
        print(f"previews: {Path(previews[0]).parent}")
    failed = sum(1 for item in files if item.outcome != "done")
    print(f"{len(files) - failed} done, {failed} failed")


def _output_dir(item: Outcome) -> str:
    return item.manifest_key.rsplit("/", 1)[0] + "/" if item.manifest_key else ""
