"""Every entry of the bad-input corpus, driven through the real on_upload handler (issue 6, Hardening).

GIVEN a local bucket holding the bad object and a fake imageseg/videoseg on loopback, WHEN the handler
(functions/on_upload/index.py, loaded by path) gets the event — twice, as FC's at-least-once delivery may do
— THEN the object ends with exactly one failure record carrying the service's code, or a deliberate skip,
or one result; the handler never raises and the API sees at most the calls the corpus allows (no retry
storm).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from segflow.services.deps import use_handler_deps
from tests.support.bad_inputs import CORPUS, BadInput, Sparse
from tests.support.fake_api import FakeApi
from tests.support.services_harness import BUCKET, Harness, ResultServer, harness


def stage(h: Harness, case: BadInput) -> None:
    if case.data is None:
        return
    data = case.data()
    if isinstance(data, Sparse):
        path = h.storage.path_for(case.key)  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as out:
            out.write(data.head)
            out.seek(data.size - len(data.tail))
            out.write(data.tail)
    else:
        h.put(case.key, data)


def written(h: Harness, staged: str) -> dict[str, list[str]]:
    """What segflow wrote under its failure and output prefixes (the staged object itself left out)."""
    layout = h.deps.layout
    return {
        "failed": [k for k in h.keys(layout.failed_prefix) if k != staged],
        "output": [k for k in h.keys(layout.output_prefix) if k != staged],
    }


def deliver(h: Harness, case: BadInput) -> dict[str, Any]:
    payload = case.payload()
    return h.on_upload(payload if isinstance(payload, bytes) else json.dumps(payload).encode())


def test_corpus_has_at_least_thirty_distinct_cases() -> None:
    names = [case.name for case in CORPUS]
    assert len(set(names)) == len(names) >= 30
    assert len({(c.key, c.outcome, c.code, c.name) for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.name)
def test_bad_input_ends_in_one_specific_record_or_a_clean_skip(
    tmp_path: Path, api: FakeApi, results: ResultServer, case: BadInput
) -> None:
    h = harness(tmp_path / "buckets", api, results, **dict(case.settings))
    try:
        stage(h, case)
        for action, reply in case.scripted:
            api.queue(action, reply)

        first = deliver(h, case)
        calls_after_first = api.count()
        second = deliver(h, case)  # a redelivery changes nothing and calls nothing
    finally:
        use_handler_deps(None)

    assert api.count() == calls_after_first == case.api_calls, [r.action for r in api.requests]
    out = written(h, case.key)
    failure_key = h.deps.layout.failure_key(case.key)
    if case.outcome == "ignored":
        for summary in (first, second):
            assert summary["done"] == summary["submitted"] == summary["failed"] == 0
            assert all(o["code"] == case.code for o in summary["outcomes"])
        assert out == {"failed": [], "output": []}
        return

    (outcome,) = first["outcomes"]
    assert (outcome["outcome"], outcome["code"]) == (case.outcome, case.code)
    assert second["failed"] + second["skipped"] + second["duplicate"] + second["done"] == 1
    if case.outcome == "failed":
        assert out["failed"] == [failure_key]
        assert out["output"] == []
        record = json.loads(h.storage.get_bytes(failure_key))
        assert (record["Code"], record["Key"], record["Bucket"]) == (case.code, case.key, BUCKET)
    elif case.outcome == "skipped":
        assert out == {"failed": [], "output": []}
    else:
        assert case.outcome == "done"
        assert out["failed"] == []
        assert len(h.results_for(case.key)) == 1


def test_whole_corpus_in_one_event_ends_with_one_outcome_per_record(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """FC may batch records: one event carrying every default-settings record case, each processed."""
    cases = [
        c
        for c in CORPUS
        if not c.settings and not c.scripted and c.event is None and c.outcome in ("failed", "skipped")
    ]
    assert len(cases) >= 20
    h = harness(tmp_path / "buckets", api, results)
    try:
        for case in cases:
            stage(h, case)
        records = [record for case in cases for record in case.payload()["events"]]  # type: ignore[index]
        summary = h.on_upload({"events": records})
    finally:
        use_handler_deps(None)
    staged = {c.key for c in cases}
    assert summary["records"] == len(cases)
    got = [(o["outcome"], o["code"]) for o in summary["outcomes"]]
    assert got == [(c.outcome, c.code) for c in cases]
    failed = sorted(h.deps.layout.failure_key(c.key) for c in cases if c.outcome == "failed")
    assert [k for k in h.keys(h.deps.layout.failed_prefix) if k not in staged] == failed
    assert api.count() == 0
