"""Run every benchmark (each in its own process) and print one table: figure, measured, target, met?

`make bench` runs this; its options (`--quick`, `--only`) and exit status: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(__file__))
from _common import REPO_ROOT, ROW_PREFIX, Row, child_env, log, met_text, print_table

SCRIPTS = (
    *("cold_start", "per_event", "paid_calls", "collector", "backfill"),
    *("engine", "engine_burst", "engine_fc"),
)


def run_script(name: str, quick: bool) -> tuple[list[Row], float]:
    command = [sys.executable, str(REPO_ROOT / "bench" / f"{name}.py"), "--json"]
    if quick:
        command.append("--quick")
    log(f"report: running bench/{name}.py{' --quick' if quick else ''}")
    t0 = time.perf_counter()
    done = subprocess.run(
        command, capture_output=True, text=True, env=child_env(), cwd=str(REPO_ROOT), check=False
    )
    seconds = time.perf_counter() - t0
    rows = [
        Row(**json.loads(line[len(ROW_PREFIX) :]))
        for line in done.stdout.splitlines()
        if line.startswith(ROW_PREFIX)
    ]
    if done.returncode != 0 or not rows:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        rows.append(Row(f"{name}: script", f"exit {done.returncode}", "runs to the end", False, tail))
    return rows, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="", help="comma-separated subset of " + ", ".join(SCRIPTS))
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCRIPTS)
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    rows: list[Row] = []
    timings = []
    for name in names:
        script_rows, seconds = run_script(name, args.quick)
        rows += script_rows
        timings.append(f"{name} {seconds:.0f} s")
    print()
    print_table(rows)
    print()
    judged = [r for r in rows if r.met is not None]
    missed = [r for r in judged if not r.met]
    print(f"{len(judged) - len(missed)}/{len(judged)} targets met ({', '.join(timings)})")
    for r in missed:
        print(f"  {met_text(r.met)}: {r.figure}")
    return 1 if any(r.figure.endswith(": script") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
