"""bench/collector.py stages jobs as on_upload leaves them, so its figures measure collected results.

The collector publishes only for the object's current version (shared/ARCHITECTURE.md, "Versions"): a job
staged without its source object ends `superseded` and stores nothing, and the bench then measured
nothing. A few jobs through the bench's own `measure`, against its capped loopback service, must all be
stored.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.conftest import REPO_ROOT

BENCH = REPO_ROOT / "bench"


def load_collector_bench() -> ModuleType:
    sys.path.insert(0, str(BENCH))  # the scripts import their `_common` as a sibling
    try:
        spec = importlib.util.spec_from_file_location("bench_collector", BENCH / "collector.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_every_staged_job_is_collected_and_stored() -> None:
    collector = load_collector_bench()
    rows = collector.measure(jobs=6, sample=2, qps_settings=(50.0,))
    cap_row = next(row for row in rows if "rate cap" in row.figure)
    assert "6/6 results stored" in cap_row.measured, cap_row
    assert "0 Throttling.User" in cap_row.measured, cap_row
    wall_row = next(row for row in rows if "wall time" in row.figure)
    assert "6 done in the tick" in wall_row.measured, wall_row
