"""What every benchmark script shares: paths, medians, the row format `report.py` collects.

Each script prints a human table and, with `--json`, one JSON object per figure on stdout lines that start
with `ROW_PREFIX` (so library chatter on stdout never confuses the report). Why every figure has a baseline
measured in the same run: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = REPO_ROOT / "shared"
ENGINE = REPO_ROOT / "engine"
CLI = REPO_ROOT / "cli"
ROW_PREFIX = "BENCH "


def setup_paths() -> None:
    """Make `segflow`, `segflow_engine` and `tests.support` importable when a script runs alone."""
    for path in (str(REPO_ROOT), str(CLI), str(ENGINE), str(SHARED)):
        if path not in sys.path:
            sys.path.insert(0, path)


def child_env() -> dict[str, str]:
    """Environment for child interpreters: the same import path as this process."""
    env = dict(os.environ)
    extra = os.pathsep.join([str(SHARED), str(ENGINE), str(CLI), str(REPO_ROOT)])
    env["PYTHONPATH"] = extra + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("PYTHONSTARTUP", None)
    return env


@dataclass(frozen=True)
class Row:
    """One line of the final table."""

    figure: str
    measured: str
    target: str
    met: bool | None  # None: informational, no target
    detail: str = ""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions / smaller sizes")
    parser.add_argument("--json", action="store_true", help="machine-readable rows for bench/report.py")
    return parser.parse_args(argv)


def emit(rows: Sequence[Row], *, as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(ROW_PREFIX + json.dumps(asdict(row), ensure_ascii=False), flush=True)
        return
    print_table(rows)


def met_text(met: bool | None) -> str:
    return "—" if met is None else ("yes" if met else "NO")


def print_table(rows: Sequence[Row]) -> None:
    headers = ("figure", "measured", "target", "met?")
    cells = [(r.figure, r.measured, r.target, met_text(r.met)) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("  ".join("-" * w for w in widths))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))
    details = [r for r in rows if r.detail]
    if details:
        print()
        for r in details:
            print(f"* {r.figure}: {r.detail}")


def ratio_row(figure: str, value: float, baseline: float, limit: float, *, detail: str = "") -> Row:
    """`value / baseline` against an upper bound `limit`."""
    ratio = value / baseline if baseline > 0 else float("inf")
    return Row(
        figure,
        f"{ratio:.2f}× ({value:.1f} vs {baseline:.1f} ms)",
        f"≤ {limit:.2f}×",
        ratio <= limit,
        detail,
    )


def log(message: str) -> None:
    """Progress goes to stderr so stdout stays the table (or the JSON rows)."""
    print(message, file=sys.stderr, flush=True)
