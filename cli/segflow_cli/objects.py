"""Which objects `segflow backfill` takes: the input prefix listed in key order, filtered (`ObjectFilter`).

OSS lists a prefix in UTF-8 byte order, a page of up to 1000 keys at a time, and can start after any key
(`start_after`), which is what makes a backfill resumable from the last key it handled (`list_objects`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from segflow.errors import ConfigError, ObjectNotFoundError, SegflowError, StorageError
from segflow.failure_policy import transient_storage_error
from segflow.layout import BucketLayout
from segflow.retry import RetryPolicy
from segflow.storage.base import ObjectInfo, Storage

LISTING_RETRY = RetryPolicy(max_attempts=5, base_delay=0.5, max_delay=8.0, max_total=60.0)
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class BucketAccessError(ConfigError):
    """The bucket cannot be listed: it does not exist (`NoSuchBucket`) or the keys may not list it
    (`AccessDenied`). Nothing was sent."""


def parse_when(text: str, *, now: Callable[[], float] = time.time) -> float:
    """Seconds since the epoch for `--since` / `--until`: an ISO 8601 date or time (`2024-05-01`,
    `2024-05-01T08:00:00Z`, `2024-05-01T16:00+08:00`; no zone means UTC) or an age (`90m`, `12h`, `7d`,
    `2w`: that long before now)."""
    value = text.strip()
    relative = _RELATIVE.match(value.lower())
    if relative:
        return now() - float(relative.group(1)) * _UNIT_SECONDS[relative.group(2)]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{text!r} is neither an ISO 8601 date/time (2024-05-01, 2024-05-01T08:00:00Z) "
            "nor an age such as 12h or 7d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def resolve_prefix(given: str | None, input_prefix: str) -> str:
    """The key prefix to list: `given` when it is under the input prefix, else `given` taken relative to
    it; the input prefix itself when nothing is given."""
    if not given:
        return input_prefix
    given = given.lstrip("/")
    return given if given.startswith(input_prefix) else input_prefix + given


@dataclass(frozen=True)
class ObjectFilter:
    """What one backfill takes. `describe()` is its identity in a checkpoint."""

    prefix: str
    suffixes: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None

    def matches(self, info: ObjectInfo) -> bool:
        """Suffixes compare case-insensitively, as the routing rules do (cameras write `.JPG`); `since` and
        `until` bound the object's LastModified."""
        if not info.key.startswith(self.prefix):
            return False
        if self.suffixes and not info.key.lower().endswith(tuple(s.lower() for s in self.suffixes)):
            return False
        if self.since is not None or self.until is not None:
            modified = info.last_modified
            if modified is None:
                return False  # the store did not say when: a time filter cannot vouch for it
            if self.since is not None and modified < self.since:
                return False
            if self.until is not None and modified >= self.until:
                return False
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "Prefix": self.prefix,
            "Suffixes": sorted(self.suffixes),
            "Since": self.since,
            "Until": self.until,
        }

    def text(self) -> str:
        """The filters in words, for messages."""
        parts = [f"under {self.prefix}"]
        if self.suffixes:
            parts.append("ending in " + " or ".join(self.suffixes))
        if self.since is not None:
            parts.append(f"modified since {_iso(self.since)}")
        if self.until is not None:
            parts.append(f"modified before {_iso(self.until)}")
        return ", ".join(parts)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def bucket_error(error: StorageError, bucket: str, prefix: str) -> SegflowError:
    """What a failed listing means for the operator: a missing bucket and a denied listing are
    configuration errors with advice; anything else stays the storage error it is."""
    if isinstance(error, ObjectNotFoundError) or error.code == "NoSuchBucket":
        # Listing a prefix with no objects answers an empty page; a 404 can only be the bucket itself.
        return BucketAccessError(
            f"bucket {bucket} does not exist (NoSuchBucket); check the bucket name (or SEGFLOW_BUCKET) and "
            "SEGFLOW_REGION / SEGFLOW_OSS_ENDPOINT",
            code="NoSuchBucket",
            http_status=404,
            request_id=error.request_id,
        )
    if error.http_status == 403 or error.code == "AccessDenied":
        return BucketAccessError(
            f"the AccessKey in the environment may not list {bucket}/{prefix} ({error.code}); it needs "
            "oss:ListObjects on the bucket (and oss:GetObject on the inputs)",
            code="AccessDenied",
            http_status=403,
            request_id=error.request_id,
        )
    return error


def list_objects(
    storage: Storage,
    layout: BucketLayout,
    wanted: ObjectFilter,
    *,
    start_after: str = "",
    retry: RetryPolicy = LISTING_RETRY,
) -> Iterator[ObjectInfo]:
    """Every object `wanted` takes, in key order, after `start_after`; keys the handler would refuse (under
    segflow's own prefixes, outside the input prefix) are never work. A listing broken by a transient
    storage error (a 5xx, a broken connection) is reopened after the last key it gave, a few times
    (`LISTING_RETRY`), so one hiccup in a listing of 100,000 keys does not stop the run. Raises
    `BucketAccessError` for a missing bucket or a denied listing."""
    last, failures = start_after, 0
    while True:
        try:
            for info in storage.list(wanted.prefix, start_after=last):
                last = info.key
                if layout.refusal(info.key) is None and wanted.matches(info):
                    yield info
            return
        except StorageError as error:
            mapped = bucket_error(error, storage.bucket, wanted.prefix)
            if mapped is not error:
                raise mapped from error
            failures += 1
            if not transient_storage_error(error) or failures >= retry.max_attempts:
                raise
            retry.sleep(retry.backoff(failures))
