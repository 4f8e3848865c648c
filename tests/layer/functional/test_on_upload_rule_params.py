"""A rule's parameters are part of what makes an upload the same (issue 18, bug 5).

GIVEN an object done under a rule (SegmentHead), in a local bucket against the fake imageseg
WHEN the rule's parameters change (ReturnForm=mask) and the object's event comes again (a backfill, a
     redelivery, `segflow run` once more)
THEN the new rule runs and is paid once: its call carries the new parameters, the record holds them, and
     every later delivery is a duplicate; with the parameters unchanged nothing is called again, so
     records made before parameters counted (same id, same fields) are still found after an upgrade.
"""

from __future__ import annotations

from typing import Any

from tests.support.services_harness import Harness, jpeg, oss_event

KEY = "incoming/faces/me.jpg"
HEAD = {"prefix": "incoming/faces/", "action": "SegmentHead"}
HEAD_MASK = {**HEAD, "params": {"ReturnForm": "mask"}}


def calls(h: Harness) -> list[dict[str, str]]:
    return [dict(request.params) for request in h.api.requests_for("SegmentHead")]


def test_changed_parameters_run_the_new_rule_once(make: Any) -> None:
    h: Harness = make(rules=(HEAD,))
    h.put(KEY, jpeg((640, 480)))
    assert h.on_upload(oss_event(KEY))["done"] == 1
    assert [c.get("ReturnForm") for c in calls(h)] == [None]

    h = make(rules=(HEAD_MASK,))  # the rule changed; the same object's event comes again
    answer = h.on_upload(oss_event(KEY))
    assert answer["done"] == 1, answer
    assert [c.get("ReturnForm") for c in calls(h)] == [None, "mask"]  # the new rule, paid once
    assert h.manifest(KEY, "SegmentHead")["Files"], "the result of the new rule is stored"

    for _ in range(3):
        assert h.on_upload(oss_event(KEY))["duplicate"] == 1
    assert len(calls(h)) == 2
    assert len(h.keys(h.deps.layout.done_prefix)) == 1, "one done marker: segflow status counts it once"


def test_unchanged_parameters_are_a_duplicate_across_an_upgrade(make: Any) -> None:
    h: Harness = make(rules=(HEAD_MASK,))
    h.put(KEY, jpeg((640, 480)))
    assert h.on_upload(oss_event(KEY))["done"] == 1
    h = make(rules=(HEAD_MASK,))  # a new instance (or a new version of the code), the same rule
    assert h.on_upload(oss_event(KEY))["duplicate"] == 1
    assert len(calls(h)) == 1


def test_a_failure_under_other_parameters_is_tried_with_the_new_ones(make: Any) -> None:
    from tests.support.fake_api import Reply

    h: Harness = make(rules=(HEAD,))
    h.put(KEY, jpeg((640, 480)))
    h.api.queue("SegmentHead", Reply.error(400, "InvalidParameter", "ReturnForm is invalid."))
    assert h.on_upload(oss_event(KEY))["failed"] == 1
    assert h.failure(KEY) is not None

    h = make(rules=(HEAD_MASK,))
    assert h.on_upload(oss_event(KEY))["done"] == 1
    assert h.failure(KEY) is None, "the stale failure record is cleared by the result"
    assert len(calls(h)) == 2
