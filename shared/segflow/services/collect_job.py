"""One pending job a collector tick holds the lease of: poll it, and act on its status (what each status
leads to: shared/ARCHITECTURE.md, "A video job")."""

from __future__ import annotations

import logging
import time

from segflow.catalogue import Action, get_action
from segflow.deadline import Deadline
from segflow.errors import JobFailedError, ResultDownloadError, SegflowError
from segflow.failure_policy import Decisions, decide, transient_storage_error
from segflow.jobqueue import JobQueue, Lease
from segflow.logs import log_outcome
from segflow.outputs import Downloads, StoredResult, is_expired, store_result
from segflow.records import JobRecord, RecordStore
from segflow.results import AsyncJobResult, SegmentResult
from segflow.services.common import call_action, error_record, failure_record, input_url
from segflow.services.deps import Deps
from segflow.services.publish import Publisher, Version
from segflow.states import Outcome, Outcomes, RecordStates
from segflow.storage.base import Storage

LIMIT_RETRY_FAILED = "LIMIT_RETRY_FAILED"


class Holding:
    """What a tick holds while it works on one job: where, and under which lease."""

    __slots__ = ("deadline", "deps", "lease", "queue", "records", "storage")

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

    def collect(self) -> Outcome:
        """Load the pending job (gone, or finished by a tick that died before cleaning up: cleaned) and see
        it through."""
        job = self.queue.load(self.lease.record_id)
        if job is None:
            self.queue.clear_leases(self.lease.record_id)
            return Outcomes.GONE
        current = self.records.load(job.record_id)
        if current is not None and current.state in RecordStates.FINAL:
            self.queue.finish(job.record_id)
            return Outcomes.GONE
        return CollectedJob(self, job).collect()

    def unexpected(self, exc: Exception) -> Outcome:
        # One broken job must not stop the tick; its lease expires and a later tick tries again.
        return Outcomes.ERRORS


class CollectedJob:
    """One loaded pending job, seen through to its outcome for this tick."""

    __slots__ = ("at", "job", "publisher", "started")

    def __init__(self, at: Holding, job: JobRecord) -> None:
        self.at = at
        self.job = job
        self.publisher = Publisher(at.deps, at.storage, at.deadline)
        self.started = time.monotonic()

    def collect(self) -> Outcome:
        try:
            return self._poll()
        except SegflowError as error:
            return self._after_error(error)

    def _poll(self) -> Outcome:
        job, at = self.job, self.at
        action = get_action(job.action)
        job_id = job.payload.job_id
        if not job_id:
            raise JobFailedError("pending job record has no JobId", code="MissingJobId")
        result = at.deps.vision.get_async_job_result(job_id, product=action.product, deadline=at.deadline)
        if result.succeeded:
            return self._finish(job_id, action, result)
        if result.status == LIMIT_RETRY_FAILED and job.payload.resubmits < at.deps.settings.max_resubmits:
            if not self.publisher.is_current(Version.of(job)):
                return self._superseded()  # paying again for a version that is gone helps no one
            self._resubmit(action)
            at.queue.release_lease(at.lease)
            return self._log(Outcomes.RESUBMITTED, code=result.status)
        if result.failed:
            result.raise_for_failure()
        at.queue.release_lease(at.lease)  # QUEUING / PROCESSING (or a status we do not know): next tick
        return self._log(Outcomes.PENDING, code=result.status)

    def _finish(self, job_id: str, action: Action, result: AsyncJobResult) -> Outcome:
        job, at = self.job, self.at
        published = self.publisher.result(
            Version.of(job), lambda: self._store_success(job_id, action, result)
        )
        if published is None:
            return self._superseded()
        stored, _ = published  # a stale failure record left is cleared by the next duplicate delivery
        at.records.mark_done(job, outputs=stored.keys, request_id=result.request_id)
        if job.payload.submit_key:
            at.storage.delete(job.payload.submit_key)
        at.queue.finish(job.record_id)
        return self._log(Outcomes.DONE, request_id=result.request_id)

    def _superseded(self) -> Outcome:
        job, at = self.job, self.at
        at.records.mark_superseded(job)
        if job.payload.submit_key:
            at.storage.delete(job.payload.submit_key)
        at.queue.finish(job.record_id)
        return self._log(Outcomes.SUPERSEDED, code="Superseded")

    def _after_error(self, error: SegflowError) -> Outcome:
        job, at = self.job, self.at
        decision = decide(error)
        if decision == Decisions.RETRY:
            at.queue.release_lease(at.lease)
            return self._log(Outcomes.PENDING, code=error.code, request_id=error.request_id)
        if decision == Decisions.FAULT:
            # Wrong keys, missing permission or product: every job would fail the same way, and all of them
            # will be fine once the deployment is fixed, so none is recorded as failed.
            at.queue.release_lease(at.lease)
            return self._log(Outcomes.ERRORS, code=error.code, request_id=error.request_id)
        version = Version.of(job)
        document = failure_record(
            at.deps, at.storage.bucket, version, action=job.action, error=error, record=job
        )
        if self.publisher.failure(version, document) is None:
            return self._superseded()
        at.records.mark_failed(job, error_record(at.deps, error))
        if job.payload.submit_key:
            at.storage.delete(job.payload.submit_key)
        at.queue.finish(job.record_id)
        return self._log(Outcomes.FAILED, code=error.code, request_id=error.request_id)

    def _log(self, outcome: Outcome, code: str | None = None, request_id: str | None = None) -> Outcome:
        job = self.job
        log_outcome(
            self.at.deps.logger,
            logging.WARNING if outcome == Outcomes.FAILED else logging.INFO,
            bucket=job.bucket,
            key=job.key,
            action=job.action,
            outcome=outcome,
            code=code,
            request_id=request_id or job.payload.job_id,
            ms=(time.monotonic() - self.started) * 1000.0,
            job_id=job.payload.job_id,
        )
        return outcome

    # -- storing a result ---------------------------------------------------------------------------------
    def _store_success(self, job_id: str, action: Action, result: AsyncJobResult) -> StoredResult:
        """Stream the result in; an expired URL (403/404) gets one fresh GetAsyncJobResult, then fails."""
        try:
            return self._store(action, result)
        except ResultDownloadError as error:
            if not is_expired(error):
                raise
        again = self.at.deps.vision.get_async_job_result(
            job_id, product=action.product, deadline=self.at.deadline
        )
        try:
            return self._store(action, again)
        except ResultDownloadError as error:
            if not is_expired(error):
                raise
            raise ResultDownloadError(
                f"the result URL of job {job_id} answered HTTP {error.http_status} twice (result URLs"
                " expire 30 minutes after the job ends); the job must be submitted again",
                code="ResultExpired",
                http_status=error.http_status,
                request_id=again.request_id,
            ) from error

    def _store(self, action: Action, answer: AsyncJobResult) -> StoredResult:
        deps, at = self.at.deps, self.at
        return store_result(
            at.storage,
            deps.http,
            deps.layout,
            self.job,
            _as_segment_result(self.job, action, answer),
            completed_at=deps.clock(),
            limits=Downloads(deps.download_timeout, at.deadline, deps.copy_margin_seconds),
        )

    def _resubmit(self, action: Action) -> JobRecord:
        job, at = self.job, self.at
        deps = at.deps
        url = input_url(deps, at.storage, job.payload.submit_key or job.key, action)
        answer = call_action(deps, action, url, job.params)
        if not answer.job_id:
            raise JobFailedError(f"resubmitting {job.key} gave no JobId", code="MissingJobId")
        again = job.with_payload(
            job_id=answer.job_id,
            request_id=answer.request_id,
            resubmits=job.payload.resubmits + 1,
            submitted_at=deps.clock(),
        )

        def queue() -> JobRecord:
            at.queue.put(again)
            return at.records.save(again)

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
    job_id = job.payload.job_id
    if action.media == "video":
        return SegmentResult(action=job.action, request_id=result.request_id, video_url=url, job_id=job_id)
    return SegmentResult(action=job.action, request_id=result.request_id, image_url=url, job_id=job_id)
