"""collect_jobs: finish the asynchronous jobs on_upload queued.

Each tick lists `<jobs>/pending/` (only unfinished jobs live there), claims each job with a lease (so two
overlapping ticks never handle one job), polls GetAsyncJobResult on a bounded thread pool (the client's
shared rate limiter keeps every thread under the account's QPS) and stops claiming when the invocation is
about to run out of time (`Deadline`, from the function timeout at handler entry); a result copy still
running near the deadline is abandoned and its job stays pending for the next tick. PROCESS_SUCCESS
streams the result into the output prefix and writes the manifest; PROCESS_FAILED / TIMEOUT_FAILED write a
failure record; LIMIT_RETRY_FAILED resubmits (bounded); QUEUING / PROCESSING release the lease for the
next tick.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from segflow.catalogue import Action, get_action
from segflow.deadline import Deadline
from segflow.errors import (
    ApiError,
    ConfigError,
    EventError,
    JobFailedError,
    ResultDownloadError,
    SegflowError,
)
from segflow.events import TimerEvent
from segflow.jobs import FINAL_STATES, JobRecord, JobStore, Lease
from segflow.logs import log_outcome
from segflow.outputs import Downloads, StoredResult, is_expired, store_result
from segflow.results import AsyncJobResult, SegmentResult
from segflow.services.common import (
    call_action,
    clear_stale_failure,
    is_retryable_failure,
    retry_in_place,
    write_failure,
)
from segflow.services.deps import Deps
from segflow.services.inputs import input_url
from segflow.storage.base import Storage

LIMIT_RETRY_FAILED = "LIMIT_RETRY_FAILED"

# Outcomes of one claimed job.
DONE = "done"
FAILED = "failed"
PENDING = "pending"
RESUBMITTED = "resubmitted"
GONE = "gone"  # finished by someone else meanwhile; only the pending entry was cleaned up
ERRORS = "errors"


@dataclass
class CollectSummary:
    claimed: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    resubmitted: int = 0
    skipped: int = 0
    """Pending jobs another collector holds (or just won)."""
    gone: int = 0
    errors: int = 0
    redriven: int = 0
    """Uploads found stuck in `submitting` and processed again."""
    stopped_early: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "claimed": self.claimed,
            "done": self.done,
            "failed": self.failed,
            "pending": self.pending,
            "resubmitted": self.resubmitted,
            "skipped": self.skipped,
            "gone": self.gone,
            "errors": self.errors,
            "redriven": self.redriven,
            "stopped_early": self.stopped_early,
            "seconds": round(self.seconds, 3),
        }

    def to_json(self) -> str:
        """What the handler returns: FC passes a string back as the response body unchanged."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


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


def collect_tick(payload: bytes | str | None, deps: Deps, deadline: Deadline | None = None) -> CollectSummary:
    """The timer handler's work: read the timer event (an unreadable one is treated as empty: the tick
    still runs over the configured buckets), then collect."""
    try:
        event: TimerEvent | None = TimerEvent.from_payload(payload)
    except EventError as error:
        deps.logger.warning("timer event ignored (%s); collecting the configured buckets", error.code)
        event = None
    return collect_finished_jobs(deps, deadline, buckets=buckets_to_collect(deps, event))


def collect_finished_jobs(
    deps: Deps,
    deadline: Deadline | None = None,
    *,
    buckets: Sequence[str] | None = None,
    owner: str | None = None,
) -> CollectSummary:
    """One collector tick over `buckets` (default: `buckets_to_collect(deps)`)."""
    started = time.monotonic()
    deadline = deadline or Deadline.none()
    owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    summary = CollectSummary()
    concurrency = max(1, deps.settings.collect_concurrency)
    slots = threading.BoundedSemaphore(concurrency)
    futures: list[Future[str]] = []
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="segflow-collect") as pool:
        for bucket in buckets if buckets is not None else buckets_to_collect(deps):
            storage = deps.storage_for(bucket)
            store = deps.job_store(storage)
            summary.redriven += _redrive_stalled_uploads(deps, store, deadline)
            for record_id in store.list_pending():
                slots.acquire()  # claim only what a free worker can start on now
                if not deadline.has(deps.collect_stop_seconds):
                    slots.release()
                    summary.stopped_early = True
                    break
                try:
                    lease = store.try_lease(record_id, owner)
                except SegflowError as error:
                    # One job's storage hiccup is that job's problem; a later tick claims it.
                    slots.release()
                    summary.errors += 1
                    deps.logger.warning("claiming job record %s failed: %s", record_id, error.code)
                    continue
                if lease is None:
                    slots.release()
                    summary.skipped += 1
                    continue
                summary.claimed += 1
                future = pool.submit(_collect_guarded, deps, storage, store, lease, deadline)
                future.add_done_callback(lambda _: slots.release())
                futures.append(future)
            if summary.stopped_early:
                break
        for future in futures:
            outcome = future.result()
            setattr(summary, outcome, getattr(summary, outcome) + 1)
    summary.seconds = time.monotonic() - started
    return summary


def _redrive_stalled_uploads(deps: Deps, store: JobStore, deadline: Deadline) -> int:
    """Uploads whose record is stuck in `submitting` are processed again (rare: a crash after FC's last
    retry), so no object is left without a result or a failure record."""
    from segflow.services.upload import redrive_stalled

    count = 0
    for record_id in store.list_inflight():
        if not deadline.has(deps.collect_stop_seconds):
            break
        try:
            job = store.stalled(record_id, quiet_seconds=deps.stall_seconds)
            if job is None:
                continue
            redrive_stalled(deps, job)
            count += 1
        except Exception:
            deps.logger.exception("re-driving upload record %s failed", record_id)
    return count


def _collect_guarded(deps: Deps, storage: Storage, store: JobStore, lease: Lease, deadline: Deadline) -> str:
    try:
        return _collect_one(deps, storage, store, lease, deadline)
    except Exception:
        # One broken job must not stop the tick; its lease expires and a later tick tries again.
        deps.logger.exception("collecting job record %s failed unexpectedly", lease.record_id)
        return ERRORS


def _collect_one(deps: Deps, storage: Storage, store: JobStore, lease: Lease, deadline: Deadline) -> str:
    t0 = time.monotonic()
    job = store.load_pending(lease.record_id)
    if job is None:
        store.clear_leases(lease.record_id)
        return GONE
    current = store.load(job.record_id)
    if current is not None and current.state in FINAL_STATES:
        store.finish_pending(job.record_id)  # a previous tick finished it but died before cleaning up
        return GONE

    def log(outcome: str, code: str | None = None, request_id: str | None = None) -> None:
        log_outcome(
            deps.logger,
            logging.WARNING if outcome == FAILED else logging.INFO,
            bucket=job.bucket,
            key=job.key,
            action=job.action,
            outcome=outcome,
            code=code,
            request_id=request_id or job.job_id,
            ms=(time.monotonic() - t0) * 1000.0,
            job_id=job.job_id,
        )

    try:
        action = get_action(job.action)
        if not job.job_id:
            raise JobFailedError("pending job record has no JobId", code="MissingJobId")
        result = deps.vision.get_async_job_result(job.job_id, product=action.product, deadline=deadline)
        if result.succeeded:
            stored = _store_success(deps, storage, job, action, result, deadline)
            store.mark_done(job, outputs=stored.keys, request_id=result.request_id)
            clear_stale_failure(deps, storage, job.key)
            if job.submit_key:
                storage.delete(job.submit_key)
            store.finish_pending(job.record_id)
            log(DONE, request_id=result.request_id)
            return DONE
        if result.status == LIMIT_RETRY_FAILED and job.resubmits < deps.settings.max_resubmits:
            _resubmit(deps, storage, store, job, action)
            store.release_lease(lease)
            log(RESUBMITTED, code=result.status)
            return RESUBMITTED
        if result.failed:
            result.raise_for_failure()
        store.release_lease(lease)  # QUEUING / PROCESSING (or a status we do not know): next tick
        log(PENDING, code=result.status)
        return PENDING
    except SegflowError as error:
        # A job that ended badly is final whatever its code says (only LIMIT_RETRY_FAILED is resubmitted).
        final = isinstance(error, JobFailedError)
        if not final and is_retryable_failure(error):
            store.release_lease(lease)
            log(PENDING, code=error.code, request_id=error.request_id)
            return PENDING
        if not final and is_deployment_error(error):
            # Wrong keys, missing permission or product: every job would fail the same way, and all of
            # them will be fine once the deployment is fixed, so none is recorded as failed.
            store.release_lease(lease)
            log(ERRORS, code=error.code, request_id=error.request_id)
            return ERRORS
        write_failure(
            deps, storage, key=job.key, etag=job.etag, action=job.action, error=error, store=store, record=job
        )
        if job.submit_key:
            storage.delete(job.submit_key)
        store.finish_pending(job.record_id)
        log(FAILED, code=error.code, request_id=error.request_id)
        return FAILED


_DEPLOYMENT_CODE_FAMILIES = (
    "InvalidAccessKeyId",
    "InvalidSecurityToken",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "Unauthorized",
    "Forbidden",
    "InvalidApi",
    "InvalidTimeStamp",
    "InvalidConfiguration",
)


def is_deployment_error(error: SegflowError) -> bool:
    """Errors about the deployment (credentials, permissions, clock, configuration), not about a job."""
    if isinstance(error, ConfigError):
        return True
    if not isinstance(error, ApiError):
        return False  # e.g. a 403 from an expired result URL is about that result, not the deployment
    if error.http_status in (401, 403):
        return True
    return any(error.code == f or error.code.startswith(f + ".") for f in _DEPLOYMENT_CODE_FAMILIES)


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


def _store_success(
    deps: Deps, storage: Storage, job: JobRecord, action: Action, result: AsyncJobResult, deadline: Deadline
) -> StoredResult:
    """Stream the result in; an expired URL (403/404) gets one fresh GetAsyncJobResult, then fails."""

    def store(answer: AsyncJobResult) -> StoredResult:
        return store_result(
            storage,
            deps.http,
            deps.layout,
            job,
            _as_segment_result(job, action, answer),
            completed_at=deps.clock(),
            limits=Downloads(deps.download_timeout, deadline, deps.copy_margin_seconds),
        )

    try:
        return store(result)
    except ResultDownloadError as error:
        if not is_expired(error):
            raise
    assert job.job_id is not None
    again = deps.vision.get_async_job_result(job.job_id, product=action.product, deadline=deadline)
    try:
        return store(again)
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


def _resubmit(deps: Deps, storage: Storage, store: JobStore, job: JobRecord, action: Action) -> JobRecord:
    url = input_url(deps, storage, job.submit_key or job.key, action)
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
        store.put_pending(again)
        return store.save(again)

    # The new job is paid for: a storage hiccup here must not leave the old JobId pending (the next tick
    # would see LIMIT_RETRY_FAILED again and pay for another submission).
    return retry_in_place(deps, queue, what=f"queueing resubmitted job {answer.job_id} of {job.key}")
