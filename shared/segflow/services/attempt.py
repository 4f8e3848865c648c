"""One uploaded object through its action: the steps of on_upload, each a function named after it.

    locate      the key the event names (decoded, or raw), checked against the input and own prefixes
    identify    its media type from the magic bytes, the routing rule, the action
    claim       the idempotency record (a duplicate or a busy object stops here)
    validate    region, every derived key fits, the action's limits
    fit         under SEGFLOW_OVERSIZE=fit, a converted copy for an image beyond the limits
    submit      the paid call, counted in the record before it is made (at most MAX_PAID_CALLS)
    store_or_queue   the result stored at once, or the asynchronous job queued for the collector
    settle      when a step fails: the failure policy says retry, deployment fault, or failure record

`services.upload` runs them in that order for every record of an event.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, NamedTuple

from segflow.catalogue import Action, get_action, is_async_call
from segflow.errors import (
    ApiConnectionError,
    ApiError,
    EventError,
    InputValidationError,
    JobFailedError,
    ObjectNotFoundError,
    SegflowError,
    UnknownActionError,
)
from segflow.events import OssRecord
from segflow.failure_policy import Decision, RecordInProgressError, decide, transient_storage_error
from segflow.jobqueue import queue_job
from segflow.media import MediaError, MediaInfo, probe_media
from segflow.outputs import Downloads, store_result
from segflow.records import JobRecord, RecordStore
from segflow.results import Element, SegmentResult
from segflow.routing import Route, route
from segflow.services.common import call_action, clear_stale_failure, error_record, write_failure
from segflow.services.deps import Deps
from segflow.services.inputs import input_url, service_reads_bucket
from segflow.states import ClaimOutcome, Outcome, RecordState
from segflow.storage.base import ObjectInfo, Storage
from segflow.validation import (
    LimitViolationError,
    limit_violations,
    media_error_for_action,
    validate_against_limits,
)

ALIBABA_PRODUCTS = frozenset({"imageseg", "videoseg"})
MAX_PAID_CALLS = 2
"""Paid calls one (object, ETag, action) may ever cost: the first, and one more when its answer was lost
before it could be kept (a crash between the call and the record). Resubmissions of a job the service
ended with LIMIT_RETRY_FAILED are bounded apart (SEGFLOW_MAX_RESUBMITS)."""
RESULT_URL_SECONDS = 1800.0  # imageseg result URLs live 30 minutes (PicWish's an hour)
RESUME_MARGIN_SECONDS = 300.0  # a kept answer is only worth storing with time left to download it
_VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".flv", ".mkv", ".ts", ".mpg", ".mpeg", ".m4v")
_ELEMENT_FIELDS = ("image_url", "x", "y", "width", "height", "name", "origin_image_url")
_ANSWER_FIELDS = ("action", "request_id", "image_url", "origin_image_url", "job_id", "mask_url", "video_url")


class RecordOutcome(NamedTuple):
    """How one record of an event ended (logged as one JSON line, counted in the summary)."""

    outcome: Outcome
    bucket: str | None = None
    key: str | None = None
    action: str | None = None
    code: str | None = None
    request_id: str | None = None
    detail: str | None = None
    error: SegflowError | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "action": self.action,
            "outcome": self.outcome.value,
            "code": self.code,
            "request_id": self.request_id,
        }
        if self.detail:
            out["detail"] = self.detail
        return out

    @property
    def level(self) -> int:
        return (
            logging.WARNING
            if self.outcome in (Outcome.FAILED, Outcome.RETRY, Outcome.FAULT)
            else logging.INFO
        )


class UploadAttempt:
    """What the steps learn about one object, in the order they learn it."""

    __slots__ = (
        "action",
        "bucket",
        "deps",
        "event",
        "info",
        "job",
        "key",
        "media",
        "records",
        "route",
        "storage",
    )

    def __init__(self, deps: Deps, event: OssRecord, storage: Storage, key: str, info: ObjectInfo) -> None:
        self.deps = deps
        self.event = event
        self.storage = storage
        self.bucket = storage.bucket
        self.key = key
        self.info = info
        self.media: MediaInfo | None = None
        self.route: Route | None = None
        self.action: Action | None = None
        self.records: RecordStore | None = None
        self.job: JobRecord | None = None

    def outcome(self, outcome: Outcome, error: SegflowError | None = None, **fields: Any) -> RecordOutcome:
        action = self.action.name if self.action is not None else (self.route.action if self.route else None)
        if error is not None:
            fields.setdefault("code", error.code)
            fields.setdefault("request_id", error.request_id)
        return RecordOutcome(outcome, self.bucket, self.key, action, error=error, **fields)

    def fail(self, error: SegflowError, action: str | None = None) -> RecordOutcome:
        """The failure record of an object that has no idempotency record (yet)."""
        write_failure(self.deps, self.storage, key=self.key, etag=self.info.etag, action=action, error=error)
        return RecordOutcome(Outcome.FAILED, self.bucket, self.key, action, error.code, error.request_id)


# -- locate -------------------------------------------------------------------------------------------


def locate(event: OssRecord, deps: Deps) -> UploadAttempt | RecordOutcome:
    """The object the record names, or why there is nothing to do. A key outside the input prefix or under
    segflow's own prefixes is never read, in whichever form (decoded or raw) the event carried it."""
    try:
        event.validate()
        bucket, region = event.bucket, event.region
        if not event.is_object_created:
            return RecordOutcome(
                Outcome.SKIPPED, bucket, event.key, code="NotObjectCreated", detail=event.event_name
            )
    except EventError as error:
        described = event.describe()
        return RecordOutcome(
            Outcome.SKIPPED,
            _text(described.get("bucket")),
            _text(described.get("key")),
            code=error.code,
            detail=error.message,
        )
    allowed: list[str] = []
    refused: list[RecordOutcome] = []
    for key in event.candidate_keys():
        refusal = deps.layout.refusal(key)
        if refusal is None:
            allowed.append(key)
        else:
            refused.append(RecordOutcome(Outcome.SKIPPED, bucket, key, code=refusal[0], detail=refusal[1]))
    if not allowed:
        return refused[0]
    try:
        storage = deps.storage_for(bucket, region)
        for key in allowed:
            try:
                return UploadAttempt(deps, event, storage, key, storage.head(key))
            except ObjectNotFoundError:
                continue
    except SegflowError as error:
        # The bucket cannot be reached as it should (denied, unknown, down): nothing is read or paid.
        decision = decide(error)
        outcome = {Decision.RETRY: Outcome.RETRY, Decision.FAULT: Outcome.FAULT}.get(
            decision, Outcome.SKIPPED
        )
        return RecordOutcome(outcome, bucket, allowed[0], code=error.code, detail=error.message, error=error)
    if refused:
        return refused[0]  # the key that exists is the refused form (one of our own objects): never read
    return RecordOutcome(Outcome.SKIPPED, bucket, allowed[0], code="NoSuchKey", detail="object is gone")


# -- identify -----------------------------------------------------------------------------------------


def identify(attempt: UploadAttempt) -> RecordOutcome | None:
    """The media type (magic bytes, ranged reads), the route and the action; a file the action cannot
    take, or an unknown action, is this object's failure record."""
    deps, storage = attempt.deps, attempt.storage
    try:
        attempt.media = probe_media(storage.reader(attempt.key), attempt.info.size)
    except MediaError as error:
        action_name, coded = _unreadable(attempt.key, error, deps)
        return attempt.fail(coded, action_name)
    attempt.route = route(attempt.key, attempt.media.media, deps.rules)
    if attempt.route is None:  # pragma: no cover - probe_media only knows images and videos
        return attempt.fail(
            InputValidationError(f"no route for {attempt.media.media}", code="InvalidFile.Type")
        )
    try:
        action = get_action(attempt.route.action)
        if action.media != attempt.media.media:
            raise InputValidationError(
                f"{action.name} takes {action.media} files; {attempt.key} is a "
                f"{attempt.media.format} {attempt.media.media}",
                code=action.codes.format,
                http_status=action.codes.http_status,
            )
    except (UnknownActionError, InputValidationError) as error:
        return attempt.fail(error, attempt.route.action)
    attempt.action = action
    return None


def _unreadable(key: str, error: MediaError, deps: Deps) -> tuple[str | None, InputValidationError]:
    """The action the file would have gone to (media guessed from the probe, else the extension) and the
    error that action's service gives for a file it cannot read."""
    media = error.media or ("video" if key.lower().endswith(_VIDEO_EXTENSIONS) else "image")
    chosen = route(key, media, deps.rules)
    if chosen is None:
        return None, error
    try:
        return chosen.action, media_error_for_action(get_action(chosen.action), error)
    except UnknownActionError:
        return chosen.action, error


# -- claim --------------------------------------------------------------------------------------------


def claim(attempt: UploadAttempt) -> RecordOutcome | None:
    """Take the idempotency record; a duplicate delivery or an object busy elsewhere stops here."""
    assert attempt.action is not None and attempt.route is not None
    records = attempt.deps.records(attempt.storage)
    info = attempt.info
    taken = records.begin(
        attempt.bucket,
        attempt.key,
        info.etag,
        attempt.action.name,
        attempt.route.params,
        size=info.size,
        region=attempt.event.region,
    )
    if taken.outcome is ClaimOutcome.DUPLICATE:
        if taken.record.state == RecordState.DONE:
            # A result exists: an older failure record of this key must not (finishes an interrupted cleanup).
            clear_stale_failure(attempt.deps, attempt.storage, attempt.key)
        state = RecordState(taken.record.state).value
        return attempt.outcome(Outcome.DUPLICATE, request_id=taken.record.request_id, detail=state)
    if taken.outcome is ClaimOutcome.IN_PROGRESS:
        return attempt.outcome(
            Outcome.RETRY, RecordInProgressError(f"{attempt.key} is being processed elsewhere")
        )
    attempt.records, attempt.job = records, taken.record
    return None


# -- validate and fit ---------------------------------------------------------------------------------


def validate(attempt: UploadAttempt) -> None:
    """Everything that can refuse the object before a call: the region, the room its results need."""
    deps, action, job = attempt.deps, attempt.action, attempt.job
    assert action is not None and job is not None
    settings = deps.settings
    region = attempt.event.region
    # Only a service that reads the user's bucket (a presigned URL) cares where it is; an uploaded input
    # is read from the service's own temporary bucket.
    reads_bucket = action.product in ALIBABA_PRODUCTS and service_reads_bucket(settings, action)
    if settings.require_region and reads_bucket and region != settings.region:
        raise InputValidationError(
            f"the service only reads OSS objects in {settings.region}; "
            f"bucket {attempt.bucket} is in {region}",
            code=f"{action.error_prefix}.Region",
            http_status=400,
        )
    if not deps.layout.derived_keys_fit(attempt.storage, attempt.key, action.name):
        raise InputValidationError(
            f"the results of {action.name} for this key would not fit in an object name (at most 1023 "
            "bytes, and what the bucket store allows): use a shorter key",
            code="KeyTooLong",
            http_status=400,
        )


def fit(attempt: UploadAttempt) -> None:
    """Check the action's limits; under `fit`, submit a converted/scaled copy instead of failing. Raises the
    original `LimitViolationError` when no copy can help."""
    deps, action, job, media = attempt.deps, attempt.action, attempt.job, attempt.media
    assert action is not None and job is not None and media is not None and attempt.records is not None
    if not limit_violations(action, media, attempt.info.size):
        return
    try:
        validate_against_limits(action, media, attempt.info.size)
        return  # pragma: no cover - limit_violations and validate_against_limits agree
    except LimitViolationError as original_error:
        if deps.settings.oversize != "fit":
            raise
        from segflow import imagefit  # only oversize images need it (and Pillow)

        reasons = imagefit.fit_reasons(action, original_error.kinds, media.width, media.height)
        if not reasons:
            raise
        try:
            plan = imagefit.prepare_fit(attempt.storage.get_bytes(job.key), action, reasons)
            copy_info = probe_media(lambda o, n: plan.data[o : o + n], len(plan.data))
            validate_against_limits(action, copy_info, len(plan.data))
        except InputValidationError:
            raise original_error from None
    work_key = deps.layout.work_key(job.record_id, plan.extension)
    attempt.storage.put_bytes(work_key, plan.data, content_type=plan.content_type)
    attempt.job = attempt.records.save(job.evolve(submit_key=work_key, fit=plan.to_record()))


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
    attempt.job = attempt.records.note_call(attempt.job)
    try:
        result = call_action(deps, action, url, attempt.job.params)
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


def _in_place(deps: Deps, write: Any, what: str) -> Any:
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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
