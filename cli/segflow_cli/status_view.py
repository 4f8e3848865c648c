"""What `segflow status` prints without `--json`: a table of states, the newest failures, one verdict line.

Rich draws the tables when it is installed (the `cli` extra); plain aligned columns otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence

from segflow.failure_records import FAILED, FAULT
from segflow_cli.bucket_status import Backlog, BucketStatus

MESSAGE_CHARS = 160
"""A failure's message is cut here in the table (`--json` has it whole)."""
_PROBLEM_WORDS = {
    "failed": "final failures",
    "faults": "deployment faults",
    "stuck_uploads": "uploads stuck in submitting",
    "collector_silent": "the collector is silent",
}


def age(seconds: float | None) -> str:
    """`45s`, `3m12s`, `2h05m`, `3d04h`."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def state_rows(status: BucketStatus) -> list[tuple[str, str, str, str, str]]:
    """(state, count, code, action, note) rows, one per failure code and action."""
    rows = [("done", str(status.done), "", "", "")]
    note = "a newer version or a deletion took the key first: nothing written" if status.superseded else ""
    rows.append(("superseded", str(status.superseded), "", "", note))
    for kind, label, note in ((FAILED, "failed", "final"), (FAULT, "fault", "retryable once fixed")):
        found = [f for f in status.failures if f.kind == kind]
        rows += [(label, str(f.count), f.code, f.action, note) for f in found] or [(label, "0", "", "", "")]
    rows.append(("pending", str(status.pending.count), "", "", _oldest(status, status.pending)))
    stuck = status.submitting.stuck
    note = f"{stuck} stuck (over {age(status.stuck_after)})" if stuck else _oldest(status, status.submitting)
    rows.append(("submitting", str(status.submitting.count), "", "", note))
    rows.append(("deferred", str(status.deferred.count), "", "", _oldest(status, status.deferred)))
    rows.append(("waiting", str(status.waiting.count), "", "", _oldest(status, status.waiting)))
    rows.append(("collector", "", "", "", _collector(status)))
    return rows


def _oldest(status: BucketStatus, backlog: Backlog) -> str:
    if backlog.oldest is None:
        return ""
    return f"oldest {age(max(0.0, status.checked_at - backlog.oldest))} ago"


def _collector(status: BucketStatus) -> str:
    if not status.collector_awaited:  # a local bucket with nothing waiting: no timer is expected
        seen = "never ran" if status.collector_at is None else f"last run {age(status.collector_age)} ago"
        return f"{seen}: ok (local bucket, no timer)"
    if status.collector_at is None:
        return "never ran over this bucket: SILENT"
    verdict = f"SILENT (over {age(status.stale_after)})" if status.collector_stale else "ok"
    return f"last run {age(status.collector_age)} ago: {verdict}"


def failure_rows(status: BucketStatus) -> list[tuple[str, str, str, str, str, str]]:
    """(time, kind, code, action, key, message) of the newest failures, newest first."""
    rows = []
    for item in status.recent:
        message = item.message or ""
        if len(message) > MESSAGE_CHARS:
            message = message[: MESSAGE_CHARS - 1] + "…"
        when = item.time or (age(status.checked_at - item.listed_at) + " ago" if item.listed_at else "-")
        rows.append((when, item.kind, item.code, item.action, item.key or "(record gone)", message))
    return rows


def verdict(status: BucketStatus) -> str:
    if not status.problems:
        return "healthy"
    return "needs attention: " + ", ".join(_PROBLEM_WORDS[name] for name in status.problems)


def print_status(status: BucketStatus, where: str) -> None:
    states = ("state", "count", "code", "action", "note")
    failures = ("time", "kind", "code", "action", "key", "message")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(f"segflow status — {where}")
        _print_plain(states, state_rows(status))
        if status.recent:
            print(f"\n{len(status.recent)} most recent failures")
            _print_plain(failures, failure_rows(status))
        print(verdict(status))
        return
    console = Console()
    if not console.is_terminal:  # logs and monitoring: wide enough that keys are not folded
        console = Console(width=200)
    console.print(_rich_table(Table(title=f"segflow status — {where}"), states, state_rows(status)))
    if status.recent:
        title = f"{len(status.recent)} most recent failures"
        console.print(_rich_table(Table(title=title), failures, failure_rows(status)))
    console.print(verdict(status), markup=False, highlight=False)


def _rich_table(table: object, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> object:
    for column in columns:
        table.add_column(column, overflow="fold")  # type: ignore[attr-defined]
    for row in rows:
        table.add_row(*row)  # type: ignore[attr-defined]
    return table


def _print_plain(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=False)]
    for row in (columns, *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
