"""OssEvent / OssRecord / TimerEvent: decoding once, regions, and per-record errors."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from segflow.errors import EventError
from segflow.events import OssEvent, TimerEvent, decode_object_key
from tests.conftest import EVENTS_DIR, load_event


def test_single_image_event_reads_every_field() -> None:
    (record,) = OssEvent.from_payload((EVENTS_DIR / "oss-put-image.json").read_bytes()).records
    assert record.bucket == "segflow-demo"
    assert record.key == "incoming/photos/person-001.jpg"
    assert record.region == "cn-shanghai"
    assert record.event_name == "ObjectCreated:PutObject"
    assert record.event_time == datetime(2026, 11, 22, 1, 30, 12, tzinfo=timezone.utc)
    assert record.size == 245731
    assert len(record.etag) == 32 and record.etag == record.etag.upper()
    assert record.request_id == "6740E1A4B2C3D4E5F6A7B8C9"


@pytest.mark.parametrize("kind", ["bytes", "str", "dict"])
def test_payload_may_be_bytes_str_or_dict(kind: str) -> None:
    data = load_event("oss-multi-records.json")
    payload: Any = {"bytes": json.dumps(data).encode(), "str": json.dumps(data), "dict": data}[kind]
    event = OssEvent.from_payload(payload)
    assert [r.key for r in event] == [
        "incoming/photos/person-002.jpg",
        "incoming/products/mug.png",
        "incoming/videos/walk.mp4",
    ]
    assert [r.event_name for r in event][1] == "ObjectCreated:PostObject"


def test_encoded_keys_in_the_sample_event_are_decoded_once() -> None:
    event = OssEvent.from_payload(load_event("oss-key-encoded.json"))
    assert [r.key for r in event] == [
        "incoming/猫咪 照片.jpg",
        "incoming/人像 合照 (1).png",
        "incoming/a+b 100%.png",
    ]
    assert event.records[0].raw_key == "incoming/%E7%8C%AB%E5%92%AA+%E7%85%A7%E7%89%87.jpg"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # raw keys: anything an encoder would have escaped means "not encoded"
        ("incoming/猫 咪+1.png", "incoming/猫 咪+1.png"),
        ("incoming/my photo.jpg", "incoming/my photo.jpg"),
        ("incoming/100% off.png", "incoming/100% off.png"),
        # encoded keys: decoded exactly once
        ("incoming/%E7%8C%AB+%E5%92%AA%2B1.png", "incoming/猫 咪+1.png"),
        ("incoming/my+photo%20two.jpg", "incoming/my photo two.jpg"),
        ("incoming/100%25.png", "incoming/100%.png"),
        ("incoming/100%2525.png", "incoming/100%25.png"),  # double-encoded stays single-decoded
        ("incoming/a%2Bb.png", "incoming/a+b.png"),
        # nothing to decide: no escape at all
        ("incoming/a+b.png", "incoming/a+b.png"),
        ("incoming/50%.png", "incoming/50%.png"),
        ("incoming/plain.png", "incoming/plain.png"),
        # escapes that are not UTF-8 are not an encoding of a real key
        ("incoming/%FF.png", "incoming/%FF.png"),
    ],
)
def test_key_decoding_rule(raw: str, expected: str) -> None:
    assert decode_object_key(raw) == expected


def test_region_falls_back_to_the_bucket_arn() -> None:
    data = load_event("oss-non-shanghai.json")
    del data["events"][0]["region"]
    (record,) = OssEvent.from_payload(data).records
    assert record.region == "cn-beijing"


def test_non_shanghai_sample_reports_its_region() -> None:
    (record,) = OssEvent.from_payload(load_event("oss-non-shanghai.json")).records
    assert record.region == "cn-beijing"


def test_multipart_completion_keeps_the_multipart_etag() -> None:
    (record,) = OssEvent.from_payload(load_event("oss-multipart-complete.json")).records
    assert record.event_name == "ObjectCreated:CompleteMultipartUpload"
    assert record.etag.endswith("-7")


def test_quoted_lower_case_etag_is_normalised() -> None:
    data = load_event("oss-put-image.json")
    data["events"][0]["oss"]["object"]["eTag"] = '"abc123"'
    assert OssEvent.from_payload(data).records[0].etag == "ABC123"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"\xff\xfe", "[]", '{"Records": []}', '{"events": {}}'],
)
def test_malformed_payload_is_an_event_error(payload: bytes | str) -> None:
    with pytest.raises(EventError):
        OssEvent.from_payload(payload)


def test_one_bad_record_never_hides_the_others() -> None:
    data = load_event("oss-multi-records.json")
    del data["events"][1]["oss"]["object"]["key"]
    data["events"].insert(0, "not a record")
    event = OssEvent.from_payload(data)
    outcomes: list[str] = []
    for record in event:
        try:
            outcomes.append(record.validate().key)
        except EventError as exc:
            outcomes.append(f"error: {exc.message}")
    assert outcomes == [
        "error: event record 0: missing field eventName",
        "incoming/photos/person-002.jpg",
        "error: event record 2: missing field oss.object.key",
        "incoming/videos/walk.mp4",
    ]
    assert event.records[2].describe() == {"record": 2, "bucket": "segflow-demo", "key": None}


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("oss", "object", "size"), -1, "oss.object.size"),
        (("oss", "object", "size"), "12", "oss.object.size"),
        (("oss", "bucket", "name"), "", "oss.bucket.name"),
        (("eventTime",), "yesterday", "ISO 8601"),
        # A trailing newline is refused too (a regex's `$` would have let it through).
        (("oss", "bucket", "name"), "segflow-demo\n", "is not an OSS bucket name"),
        (("region",), "cn-shanghai\n", "is not a region id"),
        (("eventName",), "ObjectCreated:PutObject\n", "is not one OSS writes"),
        (("oss", "object", "eTag"), "5B3B1E6B2B1E5D0A\n", "is not an ETag"),
    ],
)
def test_bad_field_values_are_named(path: tuple[str, ...], value: object, message: str) -> None:
    data = load_event("oss-put-image.json")
    node = data["events"][0]
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    (record,) = OssEvent.from_payload(data).records
    with pytest.raises(EventError) as caught:
        record.validate()
        _ = record.event_time
    assert message in str(caught.value)


@pytest.mark.parametrize("oss", ["not an object", {"bucket": "nope"}, None])
def test_region_of_a_mangled_record_is_an_event_error_not_a_crash(oss: object) -> None:
    data = load_event("oss-put-image.json")
    del data["events"][0]["region"]
    data["events"][0]["oss"] = oss
    with pytest.raises(EventError):
        _ = OssEvent.from_payload(data).records[0].region


def test_missing_region_everywhere_is_an_event_error() -> None:
    data = load_event("oss-put-image.json")
    del data["events"][0]["region"]
    data["events"][0]["oss"]["bucket"]["arn"] = "garbage"
    with pytest.raises(EventError):
        _ = OssEvent.from_payload(data).records[0].region


def test_timer_event_fields() -> None:
    event = TimerEvent.from_payload((EVENTS_DIR / "timer.json").read_bytes())
    assert event.trigger_name == "every-minute"
    assert event.trigger_time == datetime(2026, 11, 22, 1, 32, tzinfo=timezone.utc)
    assert event.payload == '{"buckets": ["segflow-demo"]}'


@pytest.mark.parametrize("payload", [b"", "  ", None, {}])
def test_empty_timer_payload_from_a_manual_invocation_is_fine(payload: Any) -> None:
    event = TimerEvent.from_payload(payload)
    assert (event.trigger_name, event.trigger_time, event.payload) == (None, None, None)


def test_malformed_timer_payload_is_an_event_error() -> None:
    with pytest.raises(EventError):
        TimerEvent.from_payload(b"{oops")
