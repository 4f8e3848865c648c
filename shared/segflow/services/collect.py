"""collect_jobs: finish the asynchronous jobs on_upload queued, and whatever uploads were left behind.

One tick, per bucket (one bucket's trouble never stops the others): the leftovers (`services.leftovers`),
then each pending job under a lease on a bounded thread pool (`services.collect_job`), while the deadline
allows; the whole walk is shared/ARCHITECTURE.md, "A video job".
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from segflow.deadline import Deadline
from segflow.errors import ConfigError, EventError, SegflowError
from segflow.events import TimerEvent
from segflow.failure_policy import isolated
from segflow.jobqueue import JobQueue
from segflow.records import RecordStore
from segflow.services.deps import Deps
from segflow.states import Outcome, Outcomes
from segflow.storage.base import Storage

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

_BUCKET_DUTY_LIMIT = 200
"""Stalled uploads and deferred records one tick takes on per bucket (the rest wait for the next)."""


class CollectSummary:
    """What one tick did (returned by the handler as JSON). `skipped`: pending jobs another collector holds
    (or just won); `redriven`: uploads found stuck in `submitting`, or deferred by on_upload, and processed
    again; `superseded`: jobs whose object was overwritten or deleted before their outcome was written."""

    COUNTERS = (
        "claimed",
        "done",
        "failed",
        "pending",
        "resubmitted",
        "skipped",
        "gone",
        "errors",
        "redriven",
        "superseded",
    )
    __slots__ = (*COUNTERS, "seconds", "stopped_early")

    def __init__(self) -> None:
        self.claimed = self.done = self.failed = self.pending = self.resubmitted = 0
        self.skipped = self.gone = self.errors = self.redriven = self.superseded = 0
        self.stopped_early = False
        self.seconds = 0.0

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.COUNTERS}
        out["stopped_early"] = self.stopped_early
        out["seconds"] = round(self.seconds, 3)
        return out

    def to_json(self) -> str:
        """What the handler returns: FC passes a string back as the response body unchanged."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


# -- which buckets ------------------------------------------------------------------------------------


def buckets_to_collect(deps: Deps, event: TimerEvent | None = None) -> tuple[str, ...]:
    """The buckets this tick scans: the timer payload's (`{"buckets": [...]}` or `{"bucket": ...}`), else
    `Deps.buckets` (what `segflow invoke` / `segflow run` set for local bucket directories)."""
    payload = event.payload if event is not None else None
    if payload:
        named = _buckets_from_payload(payload)
        if named:
            return named
    if deps.buckets:
        return deps.buckets
    raise ConfigError(
        'the collector does not know which bucket to scan: put {"buckets": [...]} in the timer payload'
    )


def _buckets_from_payload(payload: str) -> tuple[str, ...]:
    """Only a JSON object names buckets: any other text (FC's console default is "awesome-fc") does not."""
    try:
        decoded = json.loads(payload)
    except ValueError:
        return ()
    if not isinstance(decoded, dict):
        return ()
    value = decoded.get("buckets", decoded.get("bucket"))
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


# -- one tick ---------------------------------------------------------------------------------------------


def collect_tick(payload: bytes | str | None, deps: Deps, deadline: Deadline | None = None) -> CollectSummary:
    """The timer handler's work: read the timer event (an unreadable one is treated as empty: the tick
    still runs over the configured buckets), then collect."""
    try:
        event: TimerEvent | None = TimerEvent.from_payload(payload)
    except EventError as error:
        deps.logger.warning("timer event ignored (%s); collecting the configured buckets", error.code)
        event = None
    return collect_finished_jobs(deps, deadline, buckets=buckets_to_collect(deps, event))


class _Tick:
    """One tick's shared state: its deadline, owner name, worker slots and summary, and the thread pool
    its jobs run on, started with the first job (a tick with none never imports `concurrent.futures`)."""

    def __init__(self, deps: Deps, deadline: Deadline, owner: str) -> None:
        self.deps = deps
        self.deadline = deadline
        self.owner = owner
        self.concurrency = max(1, deps.settings.collect_concurrency)
        self.slots = threading.BoundedSemaphore(self.concurrency)
        self.summary = CollectSummary()
        self.pool: ThreadPoolExecutor | None = None
        self.futures: list[Future[Outcome]] = []

    def submit(self, work: Callable[[], Outcome]) -> Future[Outcome]:
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="segflow-collect")
        future = self.pool.submit(work)
        self.futures.append(future)
        return future

    def finish(self) -> None:
        """Wait for every job started, and count how each ended."""
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        for future in self.futures:
            self.summary.count(future.result())

    def time_left(self) -> bool:
        if self.deadline.has(self.deps.collect_stop_seconds):
            return True
        self.summary.stopped_early = True
        return False


def collect_finished_jobs(
    deps: Deps,
    deadline: Deadline | None = None,
    *,
    buckets: Sequence[str] | None = None,
    owner: str | None = None,
) -> CollectSummary:
    """One collector tick over `buckets` (default: `buckets_to_collect(deps)`)."""
    started = time.monotonic()
    # Random bits without importing uuid (and its C extension) at cold start.
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
    tick = _Tick(deps, deadline or Deadline.none(), owner)
    try:
        for bucket in buckets if buckets is not None else buckets_to_collect(deps):
            if not tick.time_left():
                break
            isolated(
                partial(_collect_bucket, tick, bucket),
                partial(_bucket_failed, tick, bucket),
                logger=deps.logger,
                what=f"collecting bucket {bucket}",
            )
    finally:
        tick.finish()
    tick.summary.seconds = time.monotonic() - started
    return tick.summary


def _bucket_failed(tick: _Tick, bucket: str, exc: Exception) -> None:
    tick.summary.errors += 1


def _collect_bucket(tick: _Tick, bucket: str) -> None:
    deps = tick.deps
    try:
        storage = deps.storage_for(bucket)
    except SegflowError as error:
        # A name no store accepts (a typo in the timer payload): this bucket only.
        deps.logger.warning("bucket %r skipped: %s", bucket, error)
        tick.summary.errors += 1
        return
    records, queue = deps.records(storage), deps.queue(storage)
    _heartbeat(tick, storage)
    tick.summary.redriven += _redrive_stalled_uploads(tick, records) + _process_deferred(tick, storage)
    _expire_waiting_pairs(tick, storage)
    for record_id in queue.ids():
        tick.slots.acquire()  # claim only what a free worker can start on now
        if not tick.time_left():
            tick.slots.release()
            return
        _claim_and_start(tick, storage, records, queue, record_id)


def _heartbeat(tick: _Tick, storage: Storage) -> None:
    """When a collector last ran over this bucket (what `segflow status` checks); best effort."""
    from segflow.outputs import iso_time

    now = tick.deps.clock()
    body = json.dumps({"At": iso_time(now), "Epoch": now, "Owner": tick.owner}).encode("utf-8")
    try:
        storage.put_bytes(tick.deps.layout.heartbeat_key, body, content_type="application/json")
    except SegflowError as error:
        tick.deps.logger.warning("the collector's heartbeat could not be written: %s", error.code)


def _expire_waiting_pairs(tick: _Tick, storage: Storage) -> None:
    """RefineMask halves whose other half never came within the rule's time: one failure record each."""
    # Imported here: the collector's cold start skips on_upload's steps (ARCHITECTURE.md, "Cold start").
    from segflow.services.leftovers import expire_waiting

    deps = tick.deps
    for index, info in enumerate(storage.list(deps.layout.pairs_prefix)):
        if index >= _BUCKET_DUTY_LIMIT or not tick.time_left():
            break
        try:
            expire_waiting(deps, storage, info.key, tick.deadline)
        except Exception:
            deps.logger.exception("checking the waiting pair %s failed", info.key)


def _claim_and_start(
    tick: _Tick, storage: Storage, records: RecordStore, queue: JobQueue, record_id: str
) -> None:
    try:
        lease = queue.try_lease(record_id, tick.owner)
    except SegflowError as error:
        # One job's storage hiccup is that job's problem; a later tick claims it.
        tick.slots.release()
        tick.summary.errors += 1
        tick.deps.logger.warning("claiming job record %s failed: %s", record_id, error.code)
        return
    if lease is None:
        tick.slots.release()
        tick.summary.skipped += 1
        return
    tick.summary.claimed += 1
    from segflow.services.collect_job import Holding  # on the first job: a tick with none never loads it

    job = Holding(tick.deps, storage, records, queue, lease, tick.deadline)
    future = tick.submit(
        partial(
            isolated,
            job.collect,
            job.unexpected,
            logger=tick.deps.logger,
            what=f"collecting job record {record_id}",
        )
    )
    future.add_done_callback(lambda _: tick.slots.release())


def _redrive_stalled_uploads(tick: _Tick, records: RecordStore) -> int:
    """Uploads whose record is stuck in `submitting` are processed again (rare: a crash after FC's last
    retry), so no object is left without a result or a failure record."""
    from segflow.services.leftovers import redrive_stalled

    deps, count = tick.deps, 0
    for index, record_id in enumerate(records.list_inflight()):
        if index >= _BUCKET_DUTY_LIMIT or not tick.time_left():
            break
        try:
            job = records.stalled(record_id, quiet_seconds=deps.stall_seconds)
            if job is not None:
                if redrive_stalled(deps, job, tick.deadline) == Outcomes.SUPERSEDED:
                    tick.summary.superseded += 1
                count += 1
        except Exception:
            deps.logger.exception("re-driving upload record %s failed", record_id)
    return count


def _process_deferred(tick: _Tick, storage: Storage) -> int:
    """Event records an on_upload invocation had no time for, once FC's redelivery had its chance."""
    from segflow.services.leftovers import process_deferred

    deps, count = tick.deps, 0
    prefix = deps.layout.deferred_prefix
    for index, info in enumerate(storage.list(prefix)):
        if index >= _BUCKET_DUTY_LIMIT or not tick.time_left():
            break
        name = info.key[len(prefix) :]
        if not name.endswith(".json") or "/" in name:
            continue
        try:
            marker = name[: -len(".json")]
            if process_deferred(
                deps, storage.bucket, marker, tick.deadline, quiet_seconds=deps.stall_seconds
            ):
                count += 1
        except Exception:
            deps.logger.exception("processing deferred record %s failed", name)
    return count
