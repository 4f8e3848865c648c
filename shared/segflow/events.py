"""Read-only wrappers over the events FC hands a handler (as bytes); `object_created_event` builds one.

The payload stays a dict; properties do the decoding and the checks, once, here. Invalid JSON or a missing
`events` list fails the whole event (`EventError` from `from_payload`); a bad record only fails when its
own properties are read (`record.validate()` inside the per-record `try`), so one never hides the others.
An object key is URL-decoded at most once (`decode_object_key` says when, and what that rule gets wrong).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote_plus

from segflow.errors import EventError
from segflow.logs import printable
from segflow.values import Value

OBJECT_CREATED = "ObjectCreated:"

# What OSS writes in each field, checked with character sets rather than regular expressions: compiling
# seven patterns cost every cold start about half a millisecond.
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_LETTERS = _LOWER | frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")
_HEX = _DIGITS | frozenset("abcdefABCDEF")
_LOWER_ALNUM = _LOWER | _DIGITS
# OSS bucket names: 3–63 characters, lower-case letters, digits and hyphens, starting and ending with a
# letter or a digit, no `--` (OSS docs, "Bucket naming conventions").
_LOWER_ALNUM_HYPHEN = _LOWER_ALNUM | {"-"}
# What a URL encoder leaves as is in an object key, besides its `%XX` escapes (`decode_object_key`).
_ENCODED_CHARS = _LETTERS | _DIGITS | frozenset("-._~/!*'()%+")
# Event names (`ObjectCreated:PutObject`) and ETags (hex, `<hex>-<parts>` for multipart uploads) are short
# printable ASCII; anything else is not what OSS writes.
_EVENT_DETAIL_CHARS = _LETTERS | _DIGITS | frozenset(":_-")
_VISIBLE_ASCII = frozenset(map(chr, range(0x21, 0x7F)))


def _made_of(text: str, chars: frozenset[str], shortest: int, longest: int) -> bool:
    return shortest <= len(text) <= longest and chars.issuperset(text)


def _has_escape(text: str) -> bool:
    """Whether `text` holds a `%XX` escape (two hex digits after the `%`)."""
    at = text.find("%")
    while at != -1:
        if _made_of(text[at + 1 : at + 3], _HEX, 2, 2):
            return True
        at = text.find("%", at + 1)
    return False


def _is_bucket_name(name: str) -> bool:
    return _made_of(name, _LOWER_ALNUM_HYPHEN, 3, 63) and "-" not in (name[0], name[-1]) and "--" not in name


def _is_region_id(text: str) -> bool:
    """A region id is part of the OSS endpoint's host name (`oss-<region>.aliyuncs.com`): 2–4 lower-case
    letters and 1–4 more words of lower-case letters and digits, joined by hyphens (`cn-shanghai`,
    `cn-shanghai-finance-1`, `ap-southeast-1`); nothing that could end a host name."""
    first, *rest = text.split("-")
    return (
        _made_of(first, _LOWER, 2, 4)
        and 1 <= len(rest) <= 4
        and all(_made_of(word, _LOWER_ALNUM, 1, 16) for word in rest)
    )


def _is_event_name(text: str) -> bool:
    kind, colon, detail = text.partition(":")
    return bool(colon) and _made_of(kind, _LETTERS, 1, 64) and _made_of(detail, _EVENT_DETAIL_CHARS, 0, 64)


def _arn_region(arn: str) -> str | None:
    """The region of a bucket ARN `acs:oss:<region>:<uid>:<bucket>`."""
    parts = arn.split(":")
    if (
        len(parts) >= 4
        and parts[:2] == ["acs", "oss"]
        and _made_of(parts[2], _LOWER_ALNUM_HYPHEN, 1, len(arn))
    ):
        return parts[2]
    return None


MAX_OBJECT_BYTES = 48_800 * 1024**3
"""The largest object OSS stores (48.8 TB, OSS "Limits"): a bigger size is not one OSS reported."""


def decode_object_key(raw: str) -> str:
    """The object key for a key as it appears in an OSS event.

    OSS does not document whether `oss.object.key` arrives URL-encoded, so it is decoded **at most once**,
    and only when it *looks encoded*: at least one valid `%XX` escape **and** only characters an encoder
    emits (ASCII letters and digits, `-._~/!*'()`, `%` and `+`); then with `unquote_plus` (`+` → space,
    `%2B` → `+`, `%25` → `%`). Otherwise it is taken literally. Each of these is tested:
    - `incoming/猫 咪+1.png` (raw: spaces, Chinese, `+`) stays as is — an encoder would have escaped them;
    - `incoming/%E7%8C%AB+%E5%92%AA%2B1.png` becomes `incoming/猫 咪+1.png`;
    - `incoming/100%25.png` becomes `incoming/100%.png` (decoded once: never `100%.png` → error);
    - `incoming/a+b.png` (no escape) stays: a literal `+` is far more common in a raw key than an encoded
      key made only of ASCII and spaces;
    - `incoming/50%.png`, `incoming/100% off.png` (a `%` without two hex digits) stay, and so does a key
      whose escapes are not UTF-8 (`%FF`).
    The one key this gets wrong is a raw key that literally holds `%XX` and nothing an encoder would
    escape: `OssRecord.candidate_keys` also offers the raw form, and every check (input prefix, own
    prefixes) applies to whichever of the two is read."""
    if _has_escape(raw) and _ENCODED_CHARS.issuperset(raw):
        try:
            return unquote_plus(raw, encoding="utf-8", errors="strict")
        except UnicodeDecodeError:
            return raw  # escapes that are not UTF-8: not an encoding of a real key
    return raw


def _load(payload: bytes | bytearray | str | Mapping[str, Any], what: str) -> Any:
    if isinstance(payload, Mapping):
        return payload
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"{what} payload is not valid JSON: {exc}") from exc


def parse_time(value: str) -> datetime:
    """An ISO 8601 UTC time as OSS and timer triggers write it (`2022-08-13T06:45:43.000Z`)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EventError(f"not an ISO 8601 time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


class OssRecord(Value):
    """One element of an OSS trigger event's `events` list."""

    raw: Any
    index: int

    def _field(self, *path: str) -> Any:
        node = self.raw
        for name in path:
            if not isinstance(node, Mapping) or name not in node:
                raise EventError(f"event record {self.index}: missing field {'.'.join(path)}")
            node = node[name]
        return node

    def _optional(self, *path: str) -> Any:
        try:
            return self._field(*path)
        except EventError:
            return None

    def _str(self, *path: str) -> str:
        value = self._field(*path)
        if not isinstance(value, str) or not value:
            raise EventError(f"event record {self.index}: {'.'.join(path)} must be a non-empty string")
        return value

    def _checked(self, check: Callable[[str], bool], *path: str, code: str = "InvalidEvent") -> str:
        value = self._str(*path)
        if not check(value):
            raise EventError(
                f"event record {self.index}: {'.'.join(path)} {printable(value, 80)!r} is not one OSS writes",
                code=code,
            )
        return value

    @property
    def event_name(self) -> str:
        """E.g. `ObjectCreated:PutObject` (no `oss:` prefix, unlike s.yaml's trigger config)."""
        return self._checked(_is_event_name, "eventName")

    @property
    def event_time(self) -> datetime:
        return parse_time(self._str("eventTime"))

    @property
    def is_object_created(self) -> bool:
        """An `ObjectCreated:*` event (Put, Post, Copy, CompleteMultipartUpload, …): the only kind to
        process. `ObjectRemoved:*` and anything else never leads to a call."""
        return self.event_name.startswith(OBJECT_CREATED)

    @property
    def bucket(self) -> str:
        name = self._str("oss", "bucket", "name")
        if not _is_bucket_name(name):
            raise EventError(
                f"event record {self.index}: {printable(name, 80)!r} is not an OSS bucket name",
                code="InvalidBucketName",
            )
        return name

    @property
    def raw_key(self) -> str:
        """The key exactly as the event carries it."""
        return self._str("oss", "object", "key")

    @property
    def key(self) -> str:
        """The object key, URL-decoded once when it looks encoded (module docstring)."""
        return decode_object_key(self.raw_key)

    def candidate_keys(self) -> tuple[str, ...]:
        """The keys the object may have, most likely first: the decoded key, then the raw one when it
        differs (a raw key that merely looked encoded)."""
        key, raw = self.key, self.raw_key
        return (key,) if key == raw else (key, raw)

    @property
    def region(self) -> str:
        """The record's `region`, else the region inside the bucket ARN `acs:oss:<region>:<uid>:<bucket>`;
        only a region id (it names the OSS endpoint's host)."""
        given = self._optional("region")
        region = given if isinstance(given, str) else ""
        if not region:
            arn = self._optional("oss", "bucket", "arn")
            found = _arn_region(arn) if isinstance(arn, str) else None
            if found is None:
                raise EventError(
                    f"event record {self.index}: neither region nor oss.bucket.arn tells the region"
                )
            region = found
        if not _is_region_id(region):
            raise EventError(
                f"event record {self.index}: {printable(region, 80)!r} is not a region id",
                code="InvalidRegion",
            )
        return region

    @property
    def etag(self) -> str:
        """Upper-case hex, quotes removed (OSS writes it without; some tools add them)."""
        etag = self._str("oss", "object", "eTag").strip('"')
        if not _made_of(etag, _VISIBLE_ASCII, 1, 128):
            raise EventError(
                f"event record {self.index}: oss.object.eTag {printable(etag, 80)!r} is not an ETag"
            )
        return etag.upper()

    @property
    def size(self) -> int:
        value = self._field("oss", "object", "size")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_OBJECT_BYTES:
            raise EventError(
                f"event record {self.index}: oss.object.size must be an integer from 0 to {MAX_OBJECT_BYTES}"
            )
        return value

    @property
    def request_id(self) -> str | None:
        """The OSS request that created the object, when given (`responseElements.requestId`)."""
        value = self._optional("responseElements", "requestId")
        return value if isinstance(value, str) else None

    def validate(self) -> OssRecord:
        """Read every required field now; raises the first `EventError`. Returns self for chaining."""
        for prop in ("event_name", "bucket", "key", "region", "etag", "size"):
            getattr(self, prop)
        return self

    def describe(self) -> dict[str, object]:
        """Whatever is readable of bucket and key, for a log line about a record that failed."""
        bucket, key = self.readable_location()
        return {"record": self.index, "bucket": bucket, "key": key}

    def readable_location(self) -> tuple[str | None, str | None]:
        """(bucket, key) as far as they can be read, as a log line can carry them (`logs.printable`)."""
        found: list[str | None] = []
        for prop in ("bucket", "key"):
            try:
                found.append(printable(getattr(self, prop)))
            except EventError:
                found.append(None)
        return found[0], found[1]


class OssEvent(Value):
    """An OSS trigger event: `{"events": [record, ...]}`, possibly several records."""

    raw: Mapping[str, Any]
    records: tuple[OssRecord, ...]

    @classmethod
    def from_payload(cls, payload: bytes | bytearray | str | Mapping[str, Any]) -> OssEvent:
        data = _load(payload, "OSS event")
        if not isinstance(data, Mapping):
            raise EventError("OSS event payload must be a JSON object")
        events = data.get("events")
        if not isinstance(events, list):
            raise EventError("OSS event payload has no 'events' list")
        return cls(raw=data, records=tuple(OssRecord(raw, index) for index, raw in enumerate(events)))

    def __iter__(self) -> Iterator[OssRecord]:
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)


class TimerEvent(Value):
    """A timer trigger event: `{"triggerTime": ..., "triggerName": ..., "payload": ...}`.

    A manual invocation may send an empty payload; every field is then None."""

    raw: Mapping[str, Any]

    @classmethod
    def from_payload(cls, payload: bytes | bytearray | str | Mapping[str, Any] | None) -> TimerEvent:
        if payload is None or (not isinstance(payload, Mapping) and not payload.strip()):
            return cls(raw={})
        data = _load(payload, "timer event")
        if not isinstance(data, Mapping):
            raise EventError("timer event payload must be a JSON object")
        return cls(raw=data)

    @property
    def trigger_name(self) -> str | None:
        value = self.raw.get("triggerName")
        return value if isinstance(value, str) else None

    @property
    def trigger_time(self) -> datetime | None:
        value = self.raw.get("triggerTime")
        return parse_time(value) if isinstance(value, str) and value else None

    @property
    def payload(self) -> str | None:
        value = self.raw.get("payload")
        return value if isinstance(value, str) else None


def object_created_event(
    bucket: str,
    key: str,
    *,
    etag: str,
    size: int,
    region: str,
    event_name: str = "ObjectCreated:PutObject",
    event_time: str = "1970-01-01T00:00:00.000Z",
    account: str = "000000000000",
    request_id: str = "",
    rule_id: str = "segflow",
    encode_key: bool = True,
) -> dict[str, Any]:
    """The OSS trigger event FC delivers for one new object. The key is percent-encoded, so the
    decode-once rule of `OssRecord.key` gives back exactly `key`; `encode_key=False` puts `key` in the
    event as given (tests of how raw keys are read)."""
    from urllib.parse import quote

    record = {
        "eventName": event_name,
        "eventSource": "acs:oss",
        "eventTime": event_time,
        "eventVersion": "1.0",
        "oss": {
            "bucket": {
                "arn": f"acs:oss:{region}:{account}:{bucket}",
                "name": bucket,
                "ownerIdentity": account,
                "virtualBucket": "",
            },
            "object": {
                "deltaSize": size,
                "eTag": etag,
                "key": quote(key, safe="/") if encode_key else key,
                "size": size,
            },
            "ossSchemaVersion": "1.0",
            "ruleId": rule_id,
        },
        "region": region,
        "requestParameters": {"sourceIPAddress": "127.0.0.1"},
        "responseElements": {"requestId": request_id},
        "userIdentity": {"principalId": account},
    }
    return {"events": [record]}
