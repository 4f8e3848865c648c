"""A record no retry can fix never fails its event (issue 15 §2).

GIVEN an OSS event carrying a good record beside one that is malformed in a field that reaches storage,
a log line, JSON or a URL — a key that is not an object key (a lone surrogate, which no UTF-8 text holds;
NUL; more than 1023 bytes: OSS object naming rules, "Object naming conventions"), a bucket name or a region
that cannot be one (OSS "Bucket naming conventions"; a region is what the OSS endpoint host is made of), an
ETag, size or event name of the wrong type, shape or length, a record that is not an object at all —
WHEN the real on_upload handler runs it,
THEN the handler does not raise (FC would deliver the same event again, forever: fc-facts.md, "a failed run
is retried"), the good record is done, and the bad one ends as one outcome of its own: a failure record a
person can find (`<failed>/_long/<sha256>.json`, with its index entry) for a key that names no object, a
skip with its code for the rest; every log line and the handler's answer encode as UTF-8.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest

from segflow.failure_records import FailureRecords
from tests.support.services_harness import BUCKET, Harness, fc_context, jpeg, oss_record

GOOD = "incoming/poison/good.jpg"
OTHER = "incoming/poison/other.jpg"
Mutation = Callable[[dict[str, Any]], Any]


def set_field(*path: str, value: Any) -> Mutation:
    def mutate(record: dict[str, Any]) -> Any:
        node = record
        for name in path[:-1]:
            node = node[name]
        node[path[-1]] = value
        return record

    return mutate


def replaced_by(value: Any) -> Mutation:
    return lambda record: value


def without_region_and_arn(value: Any) -> Mutation:
    def mutate(record: dict[str, Any]) -> Any:
        record["region"] = value
        record["oss"]["bucket"]["arn"] = value
        return record

    return mutate


KEY = ("oss", "object", "key")
# (id, mutation, outcome, code): keys that cannot name an object get a failure record; the rest a skip.
BAD_KEYS = [
    ("key-lone-surrogate", set_field(*KEY, value="incoming/poison/\ud800.jpg")),
    ("key-low-surrogate-pair-reversed", set_field(*KEY, value="incoming/poison/\udc00\ud800.jpg")),
    ("key-nul", set_field(*KEY, value="incoming/poison/a\x00b.jpg")),
    ("key-over-1023-bytes", set_field(*KEY, value="incoming/poison/" + "é" * 600 + ".jpg")),
    ("key-of-a-megabyte", set_field(*KEY, value="incoming/poison/" + "k" * 1_000_000)),
]
SKIPPED = [
    ("key-not-a-string", set_field(*KEY, value=12345), "InvalidEvent"),
    ("key-empty", set_field(*KEY, value=""), "InvalidEvent"),
    (
        "key-surrogate-outside-the-input-prefix",
        set_field(*KEY, value="elsewhere/\ud800.jpg"),
        "OutsideInputPrefix",
    ),
    ("bucket-surrogate", set_field("oss", "bucket", "name", value="segflow-\ud800"), "InvalidBucketName"),
    ("bucket-not-a-string", set_field("oss", "bucket", "name", value=["segflow-demo"]), "InvalidEvent"),
    ("bucket-absurd-length", set_field("oss", "bucket", "name", value="b" * 100_000), "InvalidBucketName"),
    ("region-a-host", set_field("region", value="cn-shanghai.attacker.example/x"), "InvalidRegion"),
    ("region-surrogate", set_field("region", value="cn-\ud800"), "InvalidRegion"),
    ("region-control-chars", set_field("region", value="cn-shanghai\r\nHost: x"), "InvalidRegion"),
    ("region-not-a-string-nor-arn", without_region_and_arn(7), "InvalidEvent"),
    ("etag-surrogate", set_field("oss", "object", "eTag", value="\ud800" * 32), "InvalidEvent"),
    ("etag-absurd-length", set_field("oss", "object", "eTag", value="A" * 100_000), "InvalidEvent"),
    ("etag-not-a-string", set_field("oss", "object", "eTag", value=5), "InvalidEvent"),
    ("size-negative", set_field("oss", "object", "size", value=-1), "InvalidEvent"),
    ("size-float", set_field("oss", "object", "size", value=1.5), "InvalidEvent"),
    ("size-bool", set_field("oss", "object", "size", value=True), "InvalidEvent"),
    ("size-a-string", set_field("oss", "object", "size", value="12"), "InvalidEvent"),
    ("size-beyond-any-object", set_field("oss", "object", "size", value=10**30), "InvalidEvent"),
    ("event-name-surrogate", set_field("eventName", value="ObjectCreated:\ud800"), "InvalidEvent"),
    ("event-name-not-a-string", set_field("eventName", value=3), "InvalidEvent"),
    (
        "event-name-absurd-length",
        set_field("eventName", value="ObjectCreated:" + "P" * 100_000),
        "InvalidEvent",
    ),
    ("record-a-number", replaced_by(5), "InvalidEvent"),
    ("record-a-list", replaced_by([1, 2]), "InvalidEvent"),
    ("record-null", replaced_by(None), "InvalidEvent"),
    ("record-a-string", replaced_by("\ud800"), "InvalidEvent"),
    ("oss-not-an-object", set_field("oss", value="x"), "InvalidEvent"),
]


@pytest.fixture
def h(make: Any) -> Harness:
    built: Harness = make()
    built.put(GOOD, jpeg((64, 48)))
    built.put(OTHER, jpeg((64, 48)))
    return built


def run(h: Harness, bad: Any, caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The handler over [good, bad] (as FC hands it: JSON bytes, surrogates as `\\uXXXX` escapes); the
    answer and every log line must be UTF-8 text."""
    event = {"events": [oss_record(GOOD), bad]}
    with caplog.at_level(logging.INFO, logger="segflow"):
        summary = h.on_upload(json.dumps(event).encode())
    json.dumps(summary, ensure_ascii=False).encode("utf-8")
    for line in caplog.records:
        line.getMessage().encode("utf-8")
    return summary


def _failure_documents(h: Harness) -> list[dict[str, Any]]:
    records = FailureRecords(h.storage, h.deps.layout)
    documents = []
    for entry in records.entries():
        pointer = json.loads(h.storage.get_bytes(entry.index_key))
        documents.append(json.loads(h.storage.get_bytes(pointer["FailureKey"])))
    return documents


@pytest.mark.parametrize(("name", "mutate"), BAD_KEYS, ids=[c[0] for c in BAD_KEYS])
def test_a_key_that_names_no_object_is_a_failure_record_and_the_rest_of_the_event_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture, name: str, mutate: Mutation
) -> None:
    summary = run(h, mutate(oss_record(OTHER)), caplog)

    assert (summary["done"], summary["failed"], summary["retry"]) == (1, 1, 0)
    bad = summary["outcomes"][1]
    assert (bad["outcome"], bad["code"]) == ("failed", "InvalidObjectKey")
    assert len(bad["key"]) <= 1100, "a log line carries a bounded form of the key"
    assert h.results_for(GOOD) and h.api.count("SegmentCommonImage") == 1
    (document,) = _failure_documents(h)
    assert (document["Code"], document["Bucket"]) == ("InvalidObjectKey", BUCKET)
    assert h.keys("segflow-failed/_long/"), "the failure record is in the _long/<hash> form"
    assert document["Key"] == bad["key"]


@pytest.mark.parametrize(("name", "mutate", "code"), SKIPPED, ids=[c[0] for c in SKIPPED])
def test_a_record_malformed_elsewhere_is_skipped_with_its_code_and_the_rest_of_the_event_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture, name: str, mutate: Mutation, code: str
) -> None:
    summary = run(h, mutate(oss_record(OTHER)), caplog)

    assert (summary["done"], summary["skipped"], summary["retry"]) == (1, 1, 0)
    assert (summary["outcomes"][1]["outcome"], summary["outcomes"][1]["code"]) == ("skipped", code)
    assert h.results_for(GOOD) and not h.results_for(OTHER)
    assert h.api.count("SegmentCommonImage") == 1
    assert _failure_documents(h) == []


def test_the_same_poison_key_delivered_again_keeps_one_failure_record(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    bad = set_field(*KEY, value="incoming/poison/\ud800.jpg")(oss_record(OTHER))
    for _ in range(3):
        assert run(h, copy.deepcopy(bad), caplog)["failed"] == 1
    assert len(_failure_documents(h)) == 1 and len(h.keys("segflow-failed/_long/")) == 1


def test_a_poison_record_left_for_later_is_deferred_and_then_recorded_by_the_collector(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Too little time left: the record is written down as deferred (its JSON holds the surrogate as an
    escape), the event is raised for FC's redelivery, and the collector ends it as a failure record."""
    from segflow.errors import DeadlineError

    bad = set_field(*KEY, value="incoming/poison/\ud800.jpg")(oss_record(OTHER))
    with pytest.raises(DeadlineError):
        h.on_upload(json.dumps({"events": [bad]}).encode(), fc_context(timeout=30))
    (marker,) = h.keys("segflow-jobs/deferred/")
    h.storage.get_bytes(marker).decode("utf-8")
    h.clock.advance(h.deps.stall_seconds + 1)
    h.collect()
    assert h.keys("segflow-jobs/deferred/") == []
    assert [d["Code"] for d in _failure_documents(h)] == ["InvalidObjectKey"]


def test_a_field_no_step_reads_does_not_stop_the_object(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """`eventTime` and `requestParameters` reach nothing but the deferred marker: garbage there is not a
    reason to leave a real upload unprocessed."""
    record = oss_record(OTHER)
    record["eventTime"] = "\ud800 not a time"
    record["requestParameters"] = {"sourceIPAddress": "\udcff"}
    summary = run(h, record, caplog)
    assert summary["done"] == 2
