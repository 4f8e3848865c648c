"""collect_jobs: finish the asynchronous jobs on_upload queued, and whatever uploads were left behind.

Each tick, per bucket (one bucket's trouble never stops the others):
1. uploads stuck in `submitting` (their owner died after FC's last retry) and event records an invocation
   deferred are processed again through on_upload's own steps (`services.upload`);
2. `<jobs>/pending/` is listed (only unfinished jobs live there) and each job is claimed with a lease (so
   two overlapping ticks never handle one job) and polled with GetAsyncJobResult on a bounded thread pool
   (the client's shared rate limiter keeps every thread under the account's QPS).

No new claim is made once the invocation is about to run out of time (`Deadline`, from the function
timeout at handler entry); a result copy still running near the deadline is abandoned and its job stays
pending for the next tick. PROCESS_SUCCESS streams the result into the output prefix and writes the
manifest; PROCESS_FAILED / TIMEOUT_FAILED write a failure record; LIMIT_RETRY_FAILED resubmits (bounded);
QUEUING / PROCESSING release the lease for the next tick.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Any

from segflow.catalogue import Action, get_action
from segflow.deadline import Deadline
from segflow.errors import ConfigError, EventError, JobFailedError, ResultDownloadError, SegflowError
from segflow.events import TimerEvent
from segflow.failure_policy import Decision, decide, isolated, transient_storage_error
from segflow.jobqueue import JobQueue, Lease
from segflow.logs import log_outcome
from segflow.outputs import Downloads, StoredResult, is_expired, store_result
from segflow.records import JobRecord, RecordStore
from segflow.results import AsyncJobResult, SegmentResult
from segflow.services.common import call_action, clear_stale_failure, write_failure
from segflow.services.deps import Deps
from segflow.services.inputs import input_url
from segflow.states import Outcome, RecordState
from segflow.storage.base import Storage

LIMIT_RETRY_FAILED = "LIMIT_RETRY_FAILED"
_BUCKET_DUTY_LIMIT = 200
"""Stalled uploads and deferred records one tick takes on per bucket (the rest wait for the next)."""


class CollectSummary:
    """What one tick did (returned by the handler as JSON). `skipped`: pending jobs another collector holds
    (or just won); `redriven`: uploads found stuck in `submitting`, or deferred by on_upload, and processed
    again."""

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
    )
    __slots__ = (*COUNTERS, "seconds", "stopped_early")

    def __init__(self) -> None:
        self.claimed = self.done = self.failed = self.pending = self.resubmitted = 0
        self.skipped = self.gone = self.errors = self.redriven = 0
        self.stopped_early = False
        self.seconds = 0.0

    def count(self, outcome: Outcome) -> None:
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)

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
    """One tick's shared state: its deadline, owner name, worker slots and summary."""

    def __init__(self, deps: Deps, deadline: Deadline, owner: str, pool: ThreadPoolExecutor) -> None:
        self.deps = deps
        self.deadline = deadline
        self.owner = owner
        self.pool = pool
        self.slots = threading.BoundedSemaphore(max(1, deps.settings.collect_concurrency))
        self.summary = CollectSummary()
        self.futures: list[Future[Outcome]] = []

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
    concurrency = max(1, deps.settings.collect_concurrency)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="segflow-collect") as pool:
        tick = _Tick(deps, deadline or Deadline.none(), owner, pool)
        for bucket in buckets if buckets is not None else buckets_to_collect(deps):
            if not tick.time_left():
                break
            isolated(
                partial(_collect_bucket, tick, bucket),
                partial(_bucket_failed, tick, bucket),
                logger=deps.logger,
                what=f"collecting bucket {bucket}",
            )
        for future in tick.futures:
            tick.summary.count(future.result())
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
    from segflow.services.pairs import expire_waiting

    deps = tick.deps
    for index, info in enumerate(storage.list(deps.layout.pairs_prefix)):
        if index >= _BUCKET_DUTY_LIMIT or not tick.time_left():
            break
        try:
            expire_waiting(deps, storage, info.key)
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
    job = _JobAt(tick.deps, storage, records, queue, lease, tick.deadline)
    future = tick.pool.submit(
        isolated,
        job.collect,
        job.unexpected,
        logger=tick.deps.logger,
        what=f"collecting job record {record_id}",
    )
    future.add_done_callback(lambda _: tick.slots.release())
    tick.futures.append(future)


def _redrive_stalled_uploads(tick: _Tick, records: RecordStore) -> int:
    """Uploads whose record is stuck in `submitting` are processed again (rare: a crash after FC's last
    retry), so no object is left without a result or a failure record."""
    from segflow.services.upload import redrive_stalled

    deps, count = tick.deps, 0
    for index, record_id in enumerate(records.list_inflight()):
        if index >= _BUCKET_DUTY_LIMIT or not tick.time_left():
            break
        try:
            job = records.stalled(record_id, quiet_seconds=deps.stall_seconds)
            if job is not None:
                redrive_stalled(deps, job)
                count += 1
        except Exception:
            deps.logger.exception("re-driving upload record %s failed", record_id)
    return count


def _process_deferred(tick: _Tick, storage: Storage) -> int:
    """Event records an on_upload invocation had no time for, once FC's redelivery had its chance."""
    from segflow.services.upload import process_deferred

    deps, count = tick.deps, 0
    prefix = deps.layout.deferred_prefix
    for index, info in enumerate(storage.list(prefix)):
        if index >= _BUCKET_DUTY_LIMIT or not tick.time_left():
            break
        name = info.key[len(prefix) :]
        if not name.endswith(".json") or "/" in name:
            continue
        try:
            if process_deferred(
                deps, storage.bucket, name[: -len(".json")], quiet_seconds=deps.stall_seconds
            ):
                count += 1
        except Exception:
            deps.logger.exception("processing deferred record %s failed", name)
    return count


# -- one job ----------------------------------------------------------------------------------------------


class _JobAt:
    """One claimed job: poll it and act on its status, with the tick's deadline."""

    def __init__(
        self,
        deps: Deps,
        storage: Storage,
        records: RecordStore,
        queue: JobQueue,
        lease: Lease,
        deadline: Deadline,
    ) -> None:
        self.deps = deps
        self.storage = storage
        self.records = records
        self.queue = queue
        self.lease = lease
        self.deadline = deadline
        self.started = time.monotonic()
        self.job: JobRecord | None = None

    def collect(self) -> Outcome:
        job = self.queue.load(self.lease.record_id)
        if job is None:
            self.queue.clear_leases(self.lease.record_id)
            return Outcome.GONE
        current = self.records.load(job.record_id)
        if current is not None and RecordState(current.state).final:
            self.queue.finish(job.record_id)  # a previous tick finished it but died before cleaning up
            return Outcome.GONE
        self.job = job
        try:
            return self._poll(job)
        except SegflowError as error:
            return self._after_error(job, error)

    def unexpected(self, exc: Exception) -> Outcome:
        # One broken job must not stop the tick; its lease expires and a later tick tries again.
        return Outcome.ERRORS

    def _poll(self, job: JobRecord) -> Outcome:
        action = get_action(job.action)
        if not job.job_id:
            raise JobFailedError("pending job record has no JobId", code="MissingJobId")
        result = self.deps.vision.get_async_job_result(
            job.job_id, product=action.product, deadline=self.deadline
        )
        if result.succeeded:
            return self._finish(job, action, result)
        if result.status == LIMIT_RETRY_FAILED and job.resubmits < self.deps.settings.max_resubmits:
            self._resubmit(job, action)
            self.queue.release_lease(self.lease)
            return self._log(Outcome.RESUBMITTED, code=result.status)
        if result.failed:
            result.raise_for_failure()
        self.queue.release_lease(self.lease)  # QUEUING / PROCESSING (or a status we do not know): next tick
        return self._log(Outcome.PENDING, code=result.status)

    def _finish(self, job: JobRecord, action: Action, result: AsyncJobResult) -> Outcome:
        stored = self._store_success(job, action, result)
        self.records.mark_done(job, outputs=stored.keys, request_id=result.request_id)
        clear_stale_failure(self.deps, self.storage, job.key)
        if job.submit_key:
            self.storage.delete(job.submit_key)
        self.queue.finish(job.record_id)
        return self._log(Outcome.DONE, request_id=result.request_id)

    def _after_error(self, job: JobRecord, error: SegflowError) -> Outcome:
        decision = decide(error)
        if decision is Decision.RETRY:
            self.queue.release_lease(self.lease)
            return self._log(Outcome.PENDING, code=error.code, request_id=error.request_id)
        if decision is Decision.FAULT:
            # Wrong keys, missing permission or product: every job would fail the same way, and all of them
            # will be fine once the deployment is fixed, so none is recorded as failed.
            self.queue.release_lease(self.lease)
            return self._log(Outcome.ERRORS, code=error.code, request_id=error.request_id)
        write_failure(
            self.deps,
            self.storage,
            key=job.key,
            etag=job.etag,
            action=job.action,
            error=error,
            store=self.records,
            record=job,
        )
        if job.submit_key:
            self.storage.delete(job.submit_key)
        self.queue.finish(job.record_id)
        return self._log(Outcome.FAILED, code=error.code, request_id=error.request_id)

    def _log(self, outcome: Outcome, code: str | None = None, request_id: str | None = None) -> Outcome:
        job = self.job
        assert job is not None
        log_outcome(
            self.deps.logger,
            logging.WARNING if outcome is Outcome.FAILED else logging.INFO,
            bucket=job.bucket,
            key=job.key,
            action=job.action,
            outcome=outcome.value,
            code=code,
            request_id=request_id or job.job_id,
            ms=(time.monotonic() - self.started) * 1000.0,
            job_id=job.job_id,
        )
        return outcome

    def _store_success(self, job: JobRecord, action: Action, result: AsyncJobResult) -> StoredResult:
        """Stream the result in; an expired URL (403/404) gets one fresh GetAsyncJobResult, then fails."""
        try:
            return self._store(job, action, result)
        except ResultDownloadError as error:
            if not is_expired(error):
                raise
        assert job.job_id is not None
        again = self.deps.vision.get_async_job_result(
            job.job_id, product=action.product, deadline=self.deadline
        )
        try:
            return self._store(job, action, again)
        except ResultDownloadError as error:
            if not is_expired(error):
                raise
            raise ResultDownloadError(
                f"the result URL of job {job.job_id} answered HTTP {error.http_status} twice (result URLs"
                " expire 30 minutes after the job ends); the job must be submitted again",
                code="ResultExpired",
                http_status=error.http_status,
                request_id=again.request_id,
            ) from error

    def _store(self, job: JobRecord, action: Action, answer: AsyncJobResult) -> StoredResult:
        deps = self.deps
        return store_result(
            self.storage,
            deps.http,
            deps.layout,
            job,
            _as_segment_result(job, action, answer),
            completed_at=deps.clock(),
            limits=Downloads(deps.download_timeout, self.deadline, deps.copy_margin_seconds),
        )

    def _resubmit(self, job: JobRecord, action: Action) -> JobRecord:
        deps = self.deps
        url = input_url(deps, self.storage, job.submit_key or job.key, action)
        answer = call_action(deps, action, url, job.params)
        if not answer.job_id:
            raise JobFailedError(f"resubmitting {job.key} gave no JobId", code="MissingJobId")
        again = job.evolve(
            job_id=answer.job_id,
            request_id=answer.request_id,
            resubmits=job.resubmits + 1,
            submitted_at=deps.clock(),
        )

        def queue() -> JobRecord:
            self.queue.put(again)
            return self.records.save(again)

        # The new job is paid for: a storage hiccup here must not leave the old JobId pending (the next tick
        # would see LIMIT_RETRY_FAILED again and pay for another submission).
        return deps.storage_retry.run(
            queue,
            what=f"queueing resubmitted job {answer.job_id} of {job.key}",
            retry_if=transient_storage_error,
        )


def _as_segment_result(job: JobRecord, action: Action, result: AsyncJobResult) -> SegmentResult:
    url = result.result_url()
    if not url:
        raise JobFailedError(
            f"job {result.job_id} succeeded without a result URL",
            code="EmptyResult",
            request_id=result.request_id,
        )
    if action.media == "video":
        return SegmentResult(
            action=job.action, request_id=result.request_id, video_url=url, job_id=job.job_id
        )
    return SegmentResult(action=job.action, request_id=result.request_id, image_url=url, job_id=job.job_id)
