"""Failures injected after the paid call, for the paid-call bound's test and benchmark.

One scenario: an upload of one action kind, with the `fail_at`-th storage write after the first paid
call failing (a lasting outage, or the process dying there), FC redelivering the event, the collector
ticking and the clock running past claims, stall waits and result-URL lifetimes, for `ROUNDS` rounds or
until the object is settled. Mode `overwrite` adds an overwrite during the call: while the first paid call
runs, the user uploads a second version under the same key and its event is delivered, and the outage
still hits every write step in turn; each version is paid within the bound, and the object ends with the
second version's outcome. `sweep` runs one scenario per write step of a clean run.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from segflow.errors import SegflowError, StorageError
from segflow.records import JobRecord
from segflow.services.paid import MAX_PAID_CALLS
from segflow.storage.base import Storage
from tests.support.fake_api import FakeApi
from tests.support.media_files import cached_video
from tests.support.services_harness import Harness, ResultServer, harness, jpeg, mp4, oss_event
from tests.support.write_faults import WriteFaults

ROUNDS = 8
"""Rounds of (redelivery while it raises, a collector tick, ten minutes later)."""
OUTAGE_WRITES = 6
"""A lasting outage: the failing step and the next writes fail too (in-place retries included)."""


class Killed(BaseException):
    """What `kill -9` (or FC's timeout) looks like from inside: nothing `except Exception` catches."""


class Kind(NamedTuple):
    name: str
    key: str
    action: str
    data: Callable[[], bytes]
    overrides: dict[str, Any]
    second: Callable[[], bytes]
    """The version a user uploads over the first during its call (mode `overwrite`)."""


KINDS = [
    Kind(
        "sync", "incoming/bound/photo.jpg", "SegmentCommonImage", lambda: jpeg((320, 240)), {},
        lambda: jpeg((200, 150)),
    ),
    Kind(
        "async", "incoming/bound/clip.mp4", "SegmentVideoBody", mp4, {},
        lambda: cached_video("mp4", "libx264", 160, 120, 4),
    ),
    Kind(
        "picwish",
        "incoming/shop/item.jpg",
        "PicWish",
        lambda: jpeg((320, 240)),
        {"rules": ({"prefix": "incoming/shop/", "action": "PicWish"},)},
        lambda: jpeg((200, 150)),
    ),
    # SegmentCommonImage takes < 1280 × 1280: a 2000 × 1500 photo is segmented on a fitted copy.
    Kind(
        "fitted", "incoming/bound/big.jpg", "SegmentCommonImage", lambda: jpeg((2000, 1500)), {},
        lambda: jpeg((1500, 2000)),
    ),
]  # fmt: skip


class AfterThePaidCall(WriteFaults):
    """Counts the writes that follow the first paid call; from the `fail_at`-th of them on, `span` writes
    fail with `error()` (a process death fails every later write of that process too)."""

    def __init__(
        self, inner: Storage, paid: Callable[[], int], fail_at: int | None, span: int, error: Any
    ) -> None:
        super().__init__(inner)
        self.paid = paid
        self.fail_at, self.span, self.error = fail_at, span, error
        self.after: list[str] = []
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def should_fail(self, what: str, data: bytes | None) -> bool:
        with self._lock:
            if self.paid() == 0:
                return False
            self.after.append(what)
            index = len(self.after)
            if self.fail_at is not None and self.fail_at <= index < self.fail_at + self.span:
                self.failed.append(what)
                return True
            return False

    def injected_error(self) -> BaseException:
        error: BaseException = self.error()
        return error


def _outage() -> BaseException:
    return StorageError("injected: OSS unavailable", code="ServiceUnavailable", http_status=503)


def _killed() -> BaseException:
    return Killed("injected: the instance died")


MODES = {"outage": (_outage, OUTAGE_WRITES), "killed": (_killed, 1), "overwrite": (_outage, OUTAGE_WRITES)}


def paid_calls(api: FakeApi, kind: Kind) -> int:
    """Segmentation calls of the object the service accepted (every call here is answered with success)."""
    return sum(1 for r in api.requests_for(kind.action) if r.signature_error is None)


def paid_per_version(h: Harness, kind: Kind) -> dict[str, int]:
    """Calls the service answered, by the ETag of the version they were for: the input's MD5 (a local
    bucket's ETag), or for a fitted copy the version its record (named in the copy's key) is about."""
    counted: dict[str, int] = {}
    for action, url, digest in list(h.vision.calls):
        if action != kind.action:
            continue
        etag = digest.upper()
        if "/work/" in url:
            record_id = url.split("/work/", 1)[1].split(".", 1)[0]
            etag = JobRecord.from_json(h.storage.get_bytes(h.deps.layout.record_key(record_id))).etag
        counted[etag] = counted.get(etag, 0) + 1
    return counted


def worst_per_version(h: Harness, kind: Kind) -> int:
    return max(paid_per_version(h, kind).values(), default=0)


def scenario(
    root: Path, api: FakeApi, results: ResultServer, kind: Kind, fail_at: int | None, mode: str
) -> tuple[Harness, AfterThePaidCall]:
    api.clear()
    # Two versions make two jobs: one collector worker keeps their writes in one order, run after run.
    overrides = {**kind.overrides, **({"collect_concurrency": 1} if mode == "overwrite" else {})}
    h = harness(root, api, results, **overrides)
    h.vision.job_statuses = []  # an async job is done at its first poll
    h.put(kind.key, kind.data())
    error, span = MODES[mode]
    faulty = AfterThePaidCall(h.storage, lambda: paid_calls(api, kind), fail_at, span, error)
    h.deps.storage_for = lambda bucket, region=None: faulty  # type: ignore[method-assign]
    if mode == "overwrite":
        h.vision.during_next_call(lambda: _overwrite(h, faulty, kind))
    for _ in range(ROUNDS):
        with contextlib.suppress(SegflowError, Killed):
            h.on_upload(oss_event(kind.key))
        with contextlib.suppress(SegflowError, Killed):
            h.collect()
        if settled(h, kind.key):
            break
        # Past the dead owner's claim, the collector's stall wait and, after a few rounds, the answer's
        # 30-minute result URLs: the worst case for paying again.
        h.clock.advance(max(h.deps.claim_seconds, h.deps.stall_seconds, 600.0) + 1)
    return h, faulty


def _overwrite(h: Harness, faulty: AfterThePaidCall, kind: Kind) -> None:
    """The user uploads the second version while the first one's call runs (the upload itself is OSS's,
    never one of our failing writes), and FC delivers its event."""
    faulty.inner.put_bytes(kind.key, kind.second())
    with contextlib.suppress(SegflowError, Killed):
        h.on_upload(oss_event(kind.key))


def settled(h: Harness, key: str) -> bool:
    """One result or one failure record, of the object's current version, and no job left pending."""
    results, failure = h.results_for(key), h.failure(key)
    pending = h.keys(f"{h.deps.layout.jobs_prefix}pending/")
    if (len(results) == 1) == (failure is not None) or pending:
        return False
    current = h.storage.head(key).etag
    if failure is not None:
        return bool(failure.get("ETag") == current)
    manifest = json.loads(h.storage.get_bytes(results[0]))
    return bool(manifest["Source"]["ETag"] == current)


class Sweep(NamedTuple):
    """A fault at every write step after the paid call of one kind and mode."""

    steps: list[str]
    worst: int
    problems: dict[str, Any]


def sweep(root: Path, api: FakeApi, results: ResultServer, kind: Kind, mode: str) -> Sweep:
    """One clean run (it must pay once per version and settle), then one run per write step with the fault
    there. `worst`: the most paid calls one version of the object cost."""
    h, clean = scenario(root / "clean", api, results, kind, None, mode)
    versions = 2 if mode == "overwrite" else 1
    assert settled(h, kind.key) and h.results_for(kind.key) and paid_calls(api, kind) == versions
    assert set(paid_per_version(h, kind).values()) == {1}
    problems: dict[str, Any] = {}
    worst = 0
    for fail_at in range(1, len(clean.after) + 1):
        h, faulty = scenario(root / f"at-{fail_at}", api, results, kind, fail_at, mode)
        step = clean.after[fail_at - 1]
        calls = worst_per_version(h, kind)
        worst = max(worst, calls)
        if not faulty.failed:
            problems[step] = "the failure was never injected"
        elif calls > MAX_PAID_CALLS:
            problems[step] = f"paid {calls} times"
        elif not settled(h, kind.key):
            problems[step] = {"results": h.results_for(kind.key), "failure": h.failure(kind.key)}
    return Sweep(list(clean.after), worst, problems)
