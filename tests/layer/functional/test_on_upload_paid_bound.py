"""The paid calls of one (object, ETag, action) have a hard bound, whatever fails after the call.

GIVEN one upload of each action kind — a synchronous image (SegmentCommonImage), an asynchronous video
(SegmentVideoBody), a PicWish cut-out and an oversize image segmented on a fitted copy — WHEN a failure is
injected at each step that follows the paid call in turn (every write: results, manifest, records,
pending entry, publish lock, cleanup), as a storage error that lasts a while, or as the process dying
there, or with a second version uploaded during the call (and the storage error too) — with FC
redelivering the event, the collector ticking, and the clock running past result-URL lifetimes — THEN the
service is paid at most `MAX_PAID_CALLS` times for each version, and the object ends with exactly one
result or one failure record, of its current version (the record enforces the bound: the call is counted
before it is made).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from segflow.services.deps import use_handler_deps
from segflow.services.paid import MAX_PAID_CALLS
from tests.support.fake_api import FakeApi
from tests.support.paid_faults import KINDS, MODES, Kind, sweep
from tests.support.services_harness import ResultServer


@pytest.fixture(autouse=True)
def _forget_deps() -> Iterator[None]:
    yield
    use_handler_deps(None)


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_no_failure_after_the_paid_call_makes_the_service_pay_beyond_the_bound(
    tmp_path: Path, api: FakeApi, results: ResultServer, kind: Kind, mode: str
) -> None:
    result = sweep(tmp_path, api, results, kind, mode)
    assert len(result.steps) >= 3, result.steps  # at least a result, a manifest and the record's new state
    assert not result.problems, json.dumps(result.problems, indent=1, default=str)
    assert result.worst <= MAX_PAID_CALLS
