"""What `segflow status` knows of one bucket (`BucketStatus`), and how it is gathered: from listings.

What it reads (every key from `BucketLayout`), in this order:

    <jobs>/state/done/           one marker per done record: the done count
    <jobs>/state/superseded/     one marker per record whose object changed before its outcome was written
    <jobs>/state/failed/         the failure index: counts by kind (final or fault), code and action, and
                                 which failures are the newest (by the listing's LastModified)
    <jobs>/pending/              video jobs to collect: count, and the oldest one's age
    <jobs>/inflight/             uploads in `submitting`: count, and how many are stuck (older than the
                                 collector's stall time)
    <jobs>/deferred/             event records an invocation deferred: count and oldest age
    <jobs>/pairs/                halves of RefineMask pairs waiting for the other file: count, oldest age
    <jobs>/state/collector.json  the collector's heartbeat: one read
    and, for each of the N newest failures only, its index entry (which names the source key) and its
    failure record `<failed>/<key>.json` (the message): two reads each.

No idempotency record and no result is read, however big the bucket (the cost in requests:
docs/operations.md); memory holds the counts and the N newest failures only.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from segflow.errors import ObjectNotFoundError
from segflow.failure_records import FAILED, FAULT, FailureRecords, IndexEntry
from segflow.layout import BucketLayout, entries_under
from segflow.storage.base import Storage

PAGE_SIZE = 1000
"""Keys a listing request returns (OSS ListObjectsV2's maximum `max-keys`)."""
SCHEMA = 1

PROBLEMS = ("failed", "faults", "stuck_uploads", "collector_silent")
"""What `--fail-on-failures` exits 1 for, as the JSON's `problems` names them, in this order."""


# -- what a status holds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backlog:
    """Entries waiting under one prefix, from its listing: how many, the oldest, how many are stuck."""

    count: int = 0
    oldest: float | None = None
    """LastModified of the oldest entry (seconds since the epoch)."""
    stuck: int = 0


@dataclass(frozen=True)
class FailureCount:
    kind: str
    """`failed` (final) or `fault` (a deployment fault: the object stays retryable)."""
    code: str
    action: str
    count: int


@dataclass(frozen=True)
class RecentFailure:
    """One of the newest failures: the index entry's fields, and what its failure record says."""

    kind: str
    code: str
    action: str
    listed_at: float | None
    key: str | None
    time: str | None
    message: str | None
    record_key: str | None


@dataclass(frozen=True)
class BucketStatus:
    bucket: str
    checked_at: float
    done: int
    superseded: int
    """Attempts that ended without writing (a newer version, or a deletion, took the key): not a problem."""
    failures: tuple[FailureCount, ...]
    pending: Backlog
    submitting: Backlog
    deferred: Backlog
    waiting: Backlog
    collector_at: float | None
    collector_owner: str | None
    recent: tuple[RecentFailure, ...]
    stale_after: float
    stuck_after: float
    collector_deployed: bool = True
    """False for a local-directory bucket: no timer runs its collector, only the command while it waits."""

    def total(self, kind: str) -> int:
        return sum(f.count for f in self.failures if f.kind == kind)

    @property
    def collector_age(self) -> float | None:
        return None if self.collector_at is None else max(0.0, self.checked_at - self.collector_at)

    @property
    def collector_stale(self) -> bool:
        age = self.collector_age
        return age is None or age > self.stale_after

    @property
    def collector_awaited(self) -> bool:
        """Whether a silent collector leaves work undone: always for a deployed bucket; for a local one,
        only while jobs, deferred uploads or RefineMask halves wait for it."""
        waiting = self.pending.count + self.deferred.count + self.waiting.count
        return self.collector_deployed or waiting > 0

    @property
    def problems(self) -> tuple[str, ...]:
        """What needs a person, in a fixed order (empty: healthy)."""
        present = (
            self.total(FAILED) > 0,
            self.total(FAULT) > 0,
            self.submitting.stuck > 0,
            self.collector_stale and self.collector_awaited,
        )
        return tuple(name for name, found in zip(PROBLEMS, present, strict=True) if found)

    def to_json(self) -> dict[str, Any]:
        """The documented `--json` shape (`schema` 1): new fields may be added, none renamed."""
        return {
            "schema": SCHEMA,
            "bucket": self.bucket,
            "checked_at": _iso(self.checked_at),
            "healthy": not self.problems,
            "problems": list(self.problems),
            "done": self.done,
            "superseded": self.superseded,
            "failed": self._failures_json(FAILED),
            "faults": self._failures_json(FAULT),
            "pending": self._backlog_json(self.pending),
            "submitting": {**self._backlog_json(self.submitting), "stuck": self.submitting.stuck,
                           "stuck_after_seconds": self.stuck_after},
            "deferred": self._backlog_json(self.deferred),
            "waiting": self._backlog_json(self.waiting),
            "collector": {"last_run": _iso(self.collector_at), "age_seconds": _round(self.collector_age),
                          "owner": self.collector_owner, "stale": self.collector_stale,
                          "stale_after_seconds": self.stale_after, "deployed": self.collector_deployed},
            "recent_failures": [_recent_json(item) for item in self.recent],
        }  # fmt: skip

    def _failures_json(self, kind: str) -> dict[str, Any]:
        rows = [
            {"code": f.code, "action": f.action, "count": f.count} for f in self.failures if f.kind == kind
        ]
        return {"total": self.total(kind), "by_code": rows}

    def _backlog_json(self, backlog: Backlog) -> dict[str, Any]:
        age = None if backlog.oldest is None else max(0.0, self.checked_at - backlog.oldest)
        return {"count": backlog.count, "oldest_at": _iso(backlog.oldest), "oldest_age_seconds": _round(age)}


def _recent_json(item: RecentFailure) -> dict[str, Any]:
    return {
        "key": item.key,
        "kind": item.kind,
        "code": item.code,
        "action": item.action,
        "time": item.time or _iso(item.listed_at),
        "message": item.message,
        "record": item.record_key,
    }


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


# -- gathering it ----------------------------------------------------------------------------------------


def gather_status(
    storage: Storage,
    layout: BucketLayout,
    *,
    now: float,
    failures: int,
    stale_after: float,
    stuck_after: float,
    collector_deployed: bool = True,
) -> BucketStatus:
    """One listing per prefix, one heartbeat read, two reads for each of the `failures` newest failures."""
    records = FailureRecords(storage, layout)
    done = _markers(storage, layout.done_prefix)
    superseded = _markers(storage, layout.superseded_prefix)
    counts, newest = _failure_index(records, failures)
    pending = _backlog(storage, layout.pending_prefix)
    submitting = _backlog(storage, layout.inflight_prefix, stuck_before=now - stuck_after)
    deferred = _backlog(storage, layout.deferred_prefix)
    waiting = _backlog(storage, layout.pairs_prefix)
    collector_at, owner = _heartbeat(storage, layout)
    return BucketStatus(
        bucket=storage.bucket,
        checked_at=now,
        done=done,
        superseded=superseded,
        failures=counts,
        pending=pending,
        submitting=submitting,
        deferred=deferred,
        waiting=waiting,
        collector_at=collector_at,
        collector_owner=owner,
        recent=tuple(_recent(records, entry) for entry in newest),
        stale_after=stale_after,
        stuck_after=stuck_after,
        collector_deployed=collector_deployed,
    )


def _markers(storage: Storage, prefix: str) -> int:
    """Empty marker objects directly under `prefix`, counted from its listing."""
    return sum(1 for info in storage.list(prefix, page_size=PAGE_SIZE) if "/" not in info.key[len(prefix) :])


def _failure_index(records: FailureRecords, keep: int) -> tuple[tuple[FailureCount, ...], list[IndexEntry]]:
    """Counts by (kind, code, action) and the `keep` newest entries, newest first, holding only those."""
    counts: Counter[tuple[str, str, str]] = Counter()
    heap: list[tuple[float, str, IndexEntry]] = []
    for entry in records.entries(page_size=PAGE_SIZE):
        counts[(entry.kind, entry.code, entry.action)] += 1
        if keep <= 0:
            continue
        # Ties (OSS dates to the second) go to the later index key, so the choice is stable.
        item = (
            entry.last_modified if entry.last_modified is not None else float("-inf"),
            entry.index_key,
            entry,
        )
        if len(heap) < keep:
            heapq.heappush(heap, item)
        elif item[:2] > heap[0][:2]:
            heapq.heapreplace(heap, item)
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    table = tuple(FailureCount(kind, code, action, n) for (kind, code, action), n in ordered)
    return table, [entry for *_, entry in sorted(heap, key=lambda item: item[:2], reverse=True)]


def _backlog(storage: Storage, prefix: str, *, stuck_before: float | None = None) -> Backlog:
    count, stuck, oldest = 0, 0, None
    for _, info in entries_under(storage, prefix, page_size=PAGE_SIZE):
        count += 1
        when = info.last_modified
        if when is None:
            continue
        oldest = when if oldest is None else min(oldest, when)
        if stuck_before is not None and when < stuck_before:
            stuck += 1
    return Backlog(count=count, oldest=oldest, stuck=stuck)


def _heartbeat(storage: Storage, layout: BucketLayout) -> tuple[float | None, str | None]:
    """(when the collector last ran over this bucket, which instance); (None, None) if it never did."""
    try:
        body = json.loads(storage.get_bytes(layout.heartbeat_key))
    except ObjectNotFoundError:
        return None, None
    except ValueError:
        return None, None  # unreadable: as good as silent
    if not isinstance(body, dict):
        return None, None
    owner = body.get("Owner") if isinstance(body.get("Owner"), str) else None
    epoch = body.get("Epoch")
    if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
        return float(epoch), owner
    try:
        at = datetime.strptime(str(body.get("At")), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None, owner
    return at.timestamp(), owner


def _recent(records: FailureRecords, entry: IndexEntry) -> RecentFailure:
    pointer = records.pointer(entry)
    key, failure_key = pointer if pointer is not None else (None, None)
    document = records.read(key, failure_key) if key is not None else None
    found = document or {}
    return RecentFailure(
        kind=entry.kind,
        code=str(found.get("Code") or entry.code),
        action=str(found.get("Action") or entry.action),
        listed_at=entry.last_modified,
        key=key,
        time=found.get("Time") if isinstance(found.get("Time"), str) else None,
        message=found.get("Message") if isinstance(found.get("Message"), str) else None,
        record_key=None if document is None else failure_key,
    )
