"""The paid calls of one (object, ETag, action) have a hard bound, whatever fails after the call.

GIVEN one upload of each action kind — a synchronous image (SegmentCommonImage), an asynchronous video
(SegmentVideoBody), a PicWish cut-out and an oversize image segmented on a fitted copy — WHEN a failure is
injected at each step that follows the paid call in turn (every write: results, manifest, records,
pending entry, cleanup), as a storage error that lasts a while, or as the process dying there — with FC
redelivering the event, the collector ticking, and the clock running past result-URL lifetimes — THEN the
service is paid at most `MAX_PAID_CALLS` times for it, and the object ends with exactly one result or one
failure record (the record enforces the bound: the call is counted before it is made).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from segflow.errors import SegflowError, StorageError
from segflow.services.deps import use_handler_deps
from segflow.services.paid import MAX_PAID_CALLS
from segflow.storage.base import Storage
from tests.support.fake_api import FakeApi
from tests.support.services_harness import Harness, ResultServer, harness, jpeg, mp4, oss_event
from tests.support.write_faults import WriteFaults

ROUNDS = 8
"""Rounds of (redelivery while it raises, a collector tick, ten minutes later)."""
OUTAGE_WRITES = 6
"""A lasting outage: the failing step and the next writes fail too (in-place retries included)."""


class Killed(BaseException):
    """What `kill -9` (or FC's timeout) looks like from inside: nothing `except Exception` catches."""


@pytest.fixture(autouse=True)
def _forget_deps() -> Iterator[None]:
    yield
    use_handler_deps(None)


class Kind(NamedTuple):
    name: str
    key: str
    action: str
    data: Callable[[], bytes]
    overrides: dict[str, Any]


KINDS = [
    Kind("sync", "incoming/bound/photo.jpg", "SegmentCommonImage", lambda: jpeg((320, 240)), {}),
    Kind("async", "incoming/bound/clip.mp4", "SegmentVideoBody", mp4, {}),
    Kind(
        "picwish",
        "incoming/shop/item.jpg",
        "PicWish",
        lambda: jpeg((320, 240)),
        {"rules": ({"prefix": "incoming/shop/", "action": "PicWish"},)},
    ),
    # SegmentCommonImage takes < 1280 × 1280: a 2000 × 1500 photo is segmented on a fitted copy.
    Kind("fitted", "incoming/bound/big.jpg", "SegmentCommonImage", lambda: jpeg((2000, 1500)), {}),
]


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


MODES = {"outage": (_outage, OUTAGE_WRITES), "killed": (_killed, 1)}


def paid_calls(api: FakeApi, kind: Kind) -> int:
    """Segmentation calls of the object the service accepted (every call here is answered with success)."""
    return sum(1 for r in api.requests_for(kind.action) if r.signature_error is None)


def scenario(
    root: Path, api: FakeApi, results: ResultServer, kind: Kind, fail_at: int | None, mode: str
) -> tuple[Harness, AfterThePaidCall]:
    api.clear()
    h = harness(root, api, results, **kind.overrides)
    h.vision.job_statuses = []  # an async job is done at its first poll
    h.put(kind.key, kind.data())
    error, span = MODES[mode]
    faulty = AfterThePaidCall(h.storage, lambda: paid_calls(api, kind), fail_at, span, error)
    h.deps.storage_for = lambda bucket, region=None: faulty  # type: ignore[method-assign]
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


def settled(h: Harness, key: str) -> bool:
    results, failure = h.results_for(key), h.failure(key)
    pending = h.keys(f"{h.deps.layout.jobs_prefix}pending/")
    return (len(results) == 1) != (failure is not None) and not pending


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_no_failure_after_the_paid_call_makes_the_service_pay_beyond_the_bound(
    tmp_path: Path, api: FakeApi, results: ResultServer, kind: Kind, mode: str
) -> None:
    h, clean = scenario(tmp_path / "clean", api, results, kind, None, mode)
    assert settled(h, kind.key) and h.results_for(kind.key) and paid_calls(api, kind) == 1
    steps = len(clean.after)
    assert steps >= 3, clean.after  # at least a result, a manifest and the record's new state
    problems: dict[str, Any] = {}
    worst = 0
    for fail_at in range(1, steps + 1):
        h, faulty = scenario(tmp_path / f"at-{fail_at}", api, results, kind, fail_at, mode)
        step = clean.after[fail_at - 1]
        calls = paid_calls(api, kind)
        worst = max(worst, calls)
        if not faulty.failed:
            problems[step] = "the failure was never injected"
        elif calls > MAX_PAID_CALLS:
            problems[step] = f"paid {calls} times"
        elif not settled(h, kind.key):
            problems[step] = {"results": h.results_for(kind.key), "failure": h.failure(kind.key)}
    assert not problems, json.dumps(problems, indent=1, default=str)
    assert worst <= MAX_PAID_CALLS
