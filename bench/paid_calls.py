"""Paid calls per object under every injected fault: the bound, and the worst case seen.

The scenarios of tests/layer/functional/test_on_upload_paid_bound.py (`tests/support/paid_faults.py`) per
action kind and fault mode, against `segflow.services.paid.MAX_PAID_CALLS`: bench/README.md ("paid_calls.py").
Run: `python bench/paid_calls.py [--quick] [--json]` (`--quick`: the outage and overwrite modes only).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import Row, emit, log, parse_args, setup_paths

setup_paths()


def measure(modes: list[str]) -> list[Row]:
    from tests.support.fake_api import FakeApi
    from tests.support.paid_faults import KINDS, sweep
    from tests.support.services_harness import ResultServer

    from segflow.services.deps import use_handler_deps
    from segflow.services.paid import MAX_PAID_CALLS

    rows = []
    api = FakeApi().start()
    results = ResultServer()
    try:
        with tempfile.TemporaryDirectory(prefix="segflow-bench-paid-") as tmp:
            for kind in KINDS:
                worst, scenarios, problems = 0, 0, 0
                for mode in modes:
                    log(f"paid_calls: {kind.name} ({kind.action}), {mode} at every write after the call")
                    outcome = sweep(Path(tmp) / kind.name / mode, api, results, kind, mode)
                    use_handler_deps(None)
                    worst = max(worst, outcome.worst)
                    scenarios += len(outcome.steps)
                    problems += len(outcome.problems)
                rows.append(
                    Row(
                        f"paid calls per object version, {kind.name} ({kind.action}): worst under any fault",
                        f"{worst} (clean run: 1; {scenarios} faults: {', '.join(modes)} at each write)",
                        f"≤ {MAX_PAID_CALLS} (the record's bound)",
                        worst <= MAX_PAID_CALLS and problems == 0,
                        detail=(
                            f"{kind.name}: every faulted object ended with one outcome of its current version"
                            if problems == 0
                            else f"{kind.name}: {problems} faulted runs did not settle or exceeded the bound"
                        ),
                    )
                )
    finally:
        results.close()
        api.stop()
    return rows


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    modes = ["outage", "overwrite"] if args.quick else ["killed", "outage", "overwrite"]
    emit(measure(modes), as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
