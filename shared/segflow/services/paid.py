"""After the paid call: the call itself, its answer, storing or queueing it, and settling a failure.

    submit           the paid call, counted in the record before it is made (at most MAX_PAID_CALLS),
                     unless an earlier delivery's answer is still in the record
    store_or_queue   the result stored at once, or the asynchronous job queued for the collector; the
                     writes are retried in place (handing the record back over a hiccup would pay again)
    settle           when a step fails after the record was taken: the failure policy says retry,
                     deployment fault, or failure record

The steps before it (locate, identify, claim, validate, fit) are in `services.attempt`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from segflow.catalogue import Action, is_async_call
from segflow.errors import ApiConnectionError, ApiError, JobFailedError, SegflowError
from segflow.failure_policy import Decision, decide, transient_storage_error
from segflow.jobqueue import queue_job
from segflow.outputs import Downloads, store_result
from segflow.records import JobRecord
from segflow.results import Element, SegmentResult
from segflow.services.attempt import RecordOutcome, UploadAttempt, fit
from segflow.services.common import call_action, clear_stale_failure, error_record, write_failure
from segflow.services.deps import Deps
from segflow.services.inputs import input_url
from segflow.states import Outcome

T = TypeVar("T")

MAX_PAID_CALLS = 2
"""Paid calls one (object, ETag, action) may ever cost: the first, and one more when its answer was lost
before it could be kept (a crash between the call and the record). Resubmissions of a job the service
ended with LIMIT_RETRY_FAILED are bounded apart (SEGFLOW_MAX_RESUBMITS)."""
RESULT_URL_SECONDS = 1800.0  # imageseg result URLs live 30 minutes (PicWish's an hour)
RESUME_MARGIN_SECONDS = 300.0  # a kept answer is only worth storing with time left to download it
_ELEMENT_FIELDS = ("image_url", "x", "y", "width", "height", "name", "origin_image_url")
_ANSWER_FIELDS = ("action", "request_id", "image_url", "origin_image_url", "job_id", "mask_url", "video_url")


# -- submit -------------------------------------------------------------------------------------------


def submit(attempt: UploadAttempt) -> None:
    """The paid call, unless an earlier delivery paid for one whose answer the record still holds. The
    record counts the call before it is made, so whatever fails afterwards, the bound holds."""
    deps, action = attempt.deps, attempt.action
    assert action is not None and attempt.job is not None and attempt.records is not None
    if holds_answer(deps, attempt.job, action):
        return
    if attempt.job.calls >= MAX_PAID_CALLS:
        raise JobFailedError(
            f"{action.name} was already called {attempt.job.calls} times for this object and its answer "
            "could not be kept; not calling again (redrive it once the bucket is writable)",
            code="PaidCallLimit",
        )
    fit(attempt)
    url = input_url(deps, attempt.storage, attempt.job.submit_key or attempt.key, action)
    params = dict(attempt.job.params)
    if attempt.job.mask_key:
        params["MaskImageURL"] = input_url(deps, attempt.storage, attempt.job.mask_key, action)
    attempt.job = attempt.records.note_call(attempt.job)
    try:
        result = call_action(deps, action, url, params)
    except ApiError as error:
        if error.http_status is not None and not isinstance(error, ApiConnectionError):
            # The service answered with an error: nothing was billed, the call does not count.
            attempt.job = attempt.job.evolve(calls=attempt.job.calls - 1)
        raise
    attempt.job = with_answer(deps, attempt.job, action, result)


def holds_answer(deps: Deps, job: JobRecord, action: Action) -> bool:
    """An earlier delivery paid for the call but could not store its answer: store that one instead."""
    if job.outputs or (is_async_call(action, job.params) and job.job_id):
        return True  # a stored result only needs its record marked done; a JobId can be collected any time
    expires_at = job.answer_expires_at
    return (
        job.answer is not None
        and expires_at is not None
        and deps.clock() < expires_at - RESUME_MARGIN_SECONDS
    )


def with_answer(deps: Deps, job: JobRecord, action: Action, result: SegmentResult) -> JobRecord:
    """The record with what the call returned (the JobId, or the answer's result URLs)."""
    now = deps.clock()
    if is_async_call(action, job.params) and result.job_id:
        return job.evolve(job_id=result.job_id, request_id=result.request_id, submitted_at=now)
    return job.evolve(
        request_id=result.request_id,
        submitted_at=now,
        answer=_answer_record(result),
        answer_expires_at=now + RESULT_URL_SECONDS,
    )


def _answer_record(result: SegmentResult) -> dict[str, Any]:
    """What a synchronous answer must keep to be stored later: its ids and result URLs."""
    kept: dict[str, Any] = {name: getattr(result, name) for name in _ANSWER_FIELDS}
    kept["elements"] = [{name: getattr(e, name) for name in _ELEMENT_FIELDS} for e in result.elements]
    return kept


def _answer_from_record(kept: Mapping[str, Any]) -> SegmentResult:
    elements = tuple(
        Element(**{name: item.get(name) for name in _ELEMENT_FIELDS}) for item in kept.get("elements") or ()
    )
    return SegmentResult(
        action=str(kept.get("action") or ""),
        request_id=str(kept.get("request_id") or ""),
        image_url=kept.get("image_url"),
        origin_image_url=kept.get("origin_image_url"),
        elements=elements,
        job_id=kept.get("job_id"),
        mask_url=kept.get("mask_url"),
        video_url=kept.get("video_url"),
    )


# -- store or queue -----------------------------------------------------------------------------------


class AnswerNotStoredError(SegflowError):
    """Storing what a paid call returned failed: carries `error` and the record holding the answer, so
    the record handed back keeps it (never leaves this module)."""

    def __init__(self, error: SegflowError, record: JobRecord) -> None:
        super().__init__(error.message, code=error.code, http_status=error.http_status)
        self.error = error
        self.record = record


def store_or_queue(attempt: UploadAttempt) -> RecordOutcome:
    """Queue the job, or store the result the record holds. The writes are retried in place: once the call
    is paid for, a storage hiccup must not make FC's retry pay again."""
    deps, action, records = attempt.deps, attempt.action, attempt.records
    assert action is not None and records is not None and attempt.job is not None
    job = attempt.job
    try:
        if is_async_call(action, job.params) and job.job_id:
            job_id = job.job_id
            queued = _in_place(
                deps,
                lambda: queue_job(
                    records, deps.queue(attempt.storage), job, job_id=job_id, request_id=job.request_id
                ),
                f"queueing job {job_id} of {attempt.key}",
            )
            return attempt.outcome(Outcome.SUBMITTED, request_id=queued.request_id)
        if not job.outputs:
            job = _store(attempt, job, action)
        _in_place(
            deps,
            lambda: records.mark_done(job, outputs=job.outputs, request_id=job.request_id),
            f"marking {attempt.key} done",
        )
    except SegflowError as error:
        raise AnswerNotStoredError(error, job) from error
    # The record is done from here on: a failing cleanup must not hand it back (that would pay again).
    try:
        clear_stale_failure(deps, attempt.storage, attempt.key)
        if job.submit_key:
            attempt.storage.delete(job.submit_key)
    except SegflowError as error:
        # FC's retry finds the record done and finishes the cleanup (see `claim`).
        return attempt.outcome(Outcome.RETRY, error)
    return attempt.outcome(Outcome.DONE, request_id=job.request_id)


def _store(attempt: UploadAttempt, job: JobRecord, action: Action) -> JobRecord:
    deps = attempt.deps
    result = _answer_from_record(job.answer or {})
    if not result.output_urls() and not action.elements:
        # Only element actions may legitimately find nothing (no face, no head); an empty cut-out answer
        # would otherwise end as a result with no file in it.
        raise JobFailedError(
            f"{action.name} answered without a result URL", code="EmptyResult", request_id=result.request_id
        )
    rule = attempt.route.rule if attempt.route is not None else None
    stored = _in_place(
        deps,
        lambda: store_result(
            attempt.storage,
            deps.http,
            deps.layout,
            job,
            result,
            completed_at=deps.clock(),
            limits=Downloads(deps.download_timeout),
            rule=rule,
        ),
        f"storing the result of {attempt.key}",
    )
    return job.evolve(outputs=stored.keys, answer=None, answer_expires_at=None)


def _in_place(deps: Deps, write: Callable[[], T], what: str) -> T:
    return deps.storage_retry.run(write, what=what, retry_if=transient_storage_error)


# -- settle -------------------------------------------------------------------------------------------


def settle(attempt: UploadAttempt, raised: SegflowError) -> RecordOutcome:
    """A step failed after the record was taken: the failure policy decides what it means."""
    deps, records, job = attempt.deps, attempt.records, attempt.job
    assert records is not None and job is not None
    error = raised
    if isinstance(raised, AnswerNotStoredError):
        job, error = raised.record, raised.error  # release the record with the paid answer in it
    released = job.evolve(error=error_record(deps, error))
    decision = decide(error)
    if decision is Decision.FAULT:
        return _deployment_fault(attempt, released, error)
    if decision is Decision.RETRY and job.attempts < deps.max_event_attempts:
        _in_place(deps, lambda: records.release(released), f"releasing the record of {attempt.key}")
        return attempt.outcome(Outcome.RETRY, error)
    if job.outputs:
        # The result is stored, only the record could not say so: the result is this input's outcome.
        # The record handed back lists it, so a redelivery marks it done without a call.
        _in_place(deps, lambda: records.release(released), f"releasing the record of {attempt.key}")
        return attempt.outcome(Outcome.DONE, code=error.code, detail="record not done")
    return _record_failure(attempt, records.load(job.record_id) or released, error)


def _deployment_fault(attempt: UploadAttempt, released: JobRecord, error: SegflowError) -> RecordOutcome:
    """Keys, permissions, AppCode, product: the object stays retryable (its record is handed back), and the
    fault is logged loudly and written where an operator finds it (the failure record says `Fault`)."""
    deps, records = attempt.deps, attempt.records
    assert records is not None and attempt.action is not None
    deps.logger.error(
        "deployment fault: %s refused %s with %s (HTTP %s); the object stays retryable and is processed "
        "once the deployment is fixed (redelivery or `segflow redrive`)",
        attempt.action.product,
        attempt.action.name,
        error.code,
        error.http_status,
    )
    try:
        _in_place(deps, lambda: records.release(released), f"releasing the record of {attempt.key}")
        write_failure(
            deps,
            attempt.storage,
            key=attempt.key,
            etag=attempt.info.etag,
            action=attempt.action.name,
            error=error,
            fault=True,
        )
    except SegflowError as storing:
        deps.logger.warning(
            "the deployment fault of %s could not be written down: %s", attempt.key, storing.code
        )
    return attempt.outcome(Outcome.FAULT, error)


def _record_failure(attempt: UploadAttempt, current: JobRecord, error: SegflowError) -> RecordOutcome:
    deps, records = attempt.deps, attempt.records
    assert records is not None and attempt.action is not None
    try:
        write_failure(
            deps,
            attempt.storage,
            key=attempt.key,
            etag=attempt.info.etag,
            action=attempt.action.name,
            error=error,
            store=records,
            record=current,
        )
        if current.submit_key:
            attempt.storage.delete(current.submit_key)
    except SegflowError as storing:
        # The failure could not be recorded: hand the record back so the retried event records it.
        records.release(current)
        return attempt.outcome(Outcome.RETRY, storing)
    return attempt.outcome(Outcome.FAILED, error)
