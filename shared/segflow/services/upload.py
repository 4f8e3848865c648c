"""on_upload: every record of an OSS event ends as a result, a queued job, a failure record or a skip.

Per record: refuse our own outputs (the infinite trigger loop), HEAD the object, sniff its media type from
the magic bytes (ranged reads), route it to an action, take the idempotency record, check the region and
the action's limits (fitting an oversized image when the policy says so), hand the service the input
(`segflow.services.inputs`: uploaded to its temporary bucket, or presigned), and either store the
synchronous result at once or queue the asynchronous job for the collector.

A retryable failure (throttling or 5xx that outlived the client's retries, storage hiccups, an object
another invocation is working on) releases the record and is raised after all records are done, so FC
retries the event and the records already finished are skipped as duplicates. A permanent failure writes
`<failed>/<source key>.json` and processing goes on.

Nothing is paid for twice over a storage hiccup: the writes after a successful call are retried in place,
and when they still fail the released record keeps what the call returned (the JobId, or the result URLs
while they live), so the retried event stores that instead of calling again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from segflow.catalogue import Action, get_action, is_async_call
from segflow.deadline import Deadline
from segflow.errors import (
    EventError,
    InputValidationError,
    JobFailedError,
    ObjectNotFoundError,
    SegflowError,
    UnknownActionError,
)
from segflow.events import OssEvent, OssRecord
from segflow.jobs import ACQUIRED, DUPLICATE, JobRecord, JobStore
from segflow.jobs import DONE as DONE_STATE
from segflow.logs import log_outcome
from segflow.media import MediaError, MediaInfo, probe_media
from segflow.outputs import Downloads, iso_time, store_result
from segflow.results import Element, SegmentResult
from segflow.routing import route
from segflow.services.common import (
    RecordInProgressError,
    call_action,
    clear_stale_failure,
    error_record,
    is_retryable_failure,
    retry_in_place,
    write_failure,
)
from segflow.services.deps import Deps
from segflow.services.inputs import input_url, service_reads_bucket
from segflow.storage.base import ObjectInfo, Storage
from segflow.validation import (
    LimitViolationError,
    limit_violations,
    media_error_for_action,
    validate_against_limits,
)

# Outcomes, one per record (also the summary's counters).
DONE = "done"
SUBMITTED = "submitted"
FAILED = "failed"
SKIPPED = "skipped"
DUPLICATE_OUTCOME = "duplicate"
RETRY = "retry"

ALIBABA_PRODUCTS = frozenset({"imageseg", "videoseg"})
UNSTORABLE_KEY_CODES = frozenset({"InvalidObjectName", "KeyTooLong"})
_VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".flv", ".mkv", ".ts", ".mpg", ".mpeg", ".m4v")
RESULT_URL_SECONDS = 1800.0  # imageseg result URLs live 30 minutes (PicWish's an hour)
RESUME_MARGIN_SECONDS = 300.0  # a kept answer is only worth storing with time left to download it
_ELEMENT_FIELDS = ("image_url", "x", "y", "width", "height", "name", "origin_image_url")
_ANSWER_FIELDS = ("action", "request_id", "image_url", "origin_image_url", "job_id", "mask_url", "video_url")


@dataclass
class UploadSummary:
    """What one invocation did; returned by the handler (FC logs it) and asserted on by tests."""

    records: int = 0
    done: int = 0
    submitted: int = 0
    failed: int = 0
    skipped: int = 0
    duplicate: int = 0
    retry: int = 0
    seconds: float = 0.0
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "done": self.done,
            "submitted": self.submitted,
            "failed": self.failed,
            "skipped": self.skipped,
            "duplicate": self.duplicate,
            "retry": self.retry,
            "seconds": round(self.seconds, 3),
            "outcomes": list(self.outcomes),
        }

    def to_json(self) -> str:
        """What the handler returns: FC passes a string back as the response body unchanged."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


class _AnswerNotStoredError(SegflowError):
    """Storing what a paid call returned failed: carries `error` and the record holding the answer, so
    the record handed back to FC keeps it (never leaves `_process_object`)."""

    def __init__(self, error: SegflowError, record: JobRecord) -> None:
        super().__init__(error.message, code=error.code, http_status=error.http_status)
        self.error = error
        self.record = record


@dataclass
class _Outcome:
    outcome: str
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
            "outcome": self.outcome,
            "code": self.code,
            "request_id": self.request_id,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def process_upload_event(
    event: OssEvent | bytes | str | Mapping[str, Any], deps: Deps, deadline: Deadline | None = None
) -> UploadSummary:
    """Process every record; raise the first retryable error at the end, after all records had their go."""
    started = time.monotonic()
    try:
        parsed = event if isinstance(event, OssEvent) else OssEvent.from_payload(event)
    except EventError as error:
        # No retry can fix a payload that is not an OSS event: say so once and return.
        unparsable = _Outcome(SKIPPED, code=error.code, detail=error.message)
        log_outcome(deps.logger, logging.WARNING, **unparsable.fields(), ms=0.0)
        summary = UploadSummary(skipped=1, outcomes=[unparsable.fields()])
        summary.seconds = time.monotonic() - started
        return summary
    summary = UploadSummary(records=len(parsed))
    retryable: list[SegflowError] = []
    for record in parsed:
        t0 = time.monotonic()
        try:
            outcome = _process_record(record, deps)
        except Exception as exc:
            # A bug or an unexpected library error on one record must not hide the other records:
            # note it, go on, and raise at the end so FC retries the event.
            deps.logger.exception("record %d of the event failed unexpectedly", record.index)
            unexpected = SegflowError(f"unexpected {type(exc).__name__}: {exc}", code="InternalError")
            unexpected.__cause__ = exc
            described = record.describe()
            outcome = _Outcome(
                RETRY,
                bucket=_opt_str(described.get("bucket")),
                key=_opt_str(described.get("key")),
                code=unexpected.code,
                error=unexpected,
            )
        fields = outcome.fields()
        log_outcome(
            deps.logger,
            logging.WARNING if outcome.outcome in (FAILED, RETRY) else logging.INFO,
            **fields,
            ms=(time.monotonic() - t0) * 1000.0,
        )
        summary.count(outcome.outcome)
        summary.outcomes.append(fields)
        if outcome.outcome == RETRY and outcome.error is not None:
            retryable.append(outcome.error)
    summary.seconds = time.monotonic() - started
    if retryable:
        deps.logger.warning(
            "%d of %d records failed in a retryable way; raising so the event is retried",
            len(retryable),
            summary.records,
        )
        raise retryable[0]
    return summary


def _process_record(record: OssRecord, deps: Deps) -> _Outcome:
    try:
        record.validate()
    except EventError as error:
        described = record.describe()
        return _Outcome(
            SKIPPED,
            bucket=_opt_str(described.get("bucket")),
            key=_opt_str(described.get("key")),
            code=error.code,
            detail=error.message,
        )
    bucket, key = record.bucket, record.key
    if deps.layout.is_own(key):
        return _Outcome(
            SKIPPED, bucket=bucket, key=key, code="OwnOutput", detail="key under a segflow prefix"
        )
    input_prefix = deps.settings.input_prefix
    if input_prefix and not key.startswith(input_prefix):
        # The trigger's filter should never send these; a trigger on the whole bucket must not make
        # segflow process (and pay for) every object in it.
        return _Outcome(
            SKIPPED, bucket=bucket, key=key, code="OutsideInputPrefix", detail=f"not under {input_prefix}"
        )
    try:
        return _process_object(record, deps, bucket, key)
    except SegflowError as error:
        # Failures before the record exists (HEAD, listing): nothing to release, let FC retry or record.
        if is_retryable_failure(error):
            return _Outcome(RETRY, bucket=bucket, key=key, code=error.code, error=error)
        if error.code in UNSTORABLE_KEY_CODES:
            # A key the store refuses cannot carry a failure record either (it would be refused too).
            return _Outcome(SKIPPED, bucket=bucket, key=key, code=error.code, detail=error.message)
        storage = deps.storage_for(bucket, record.region)
        write_failure(deps, storage, key=key, etag=None, action=None, error=error)
        return _Outcome(FAILED, bucket=bucket, key=key, code=error.code, request_id=error.request_id)


def _process_object(record: OssRecord, deps: Deps, bucket: str, key: str) -> _Outcome:
    storage = deps.storage_for(bucket, record.region)
    try:
        info = storage.head(key)
    except ObjectNotFoundError:
        if record.raw_key != key:
            try:
                key = record.raw_key  # the rare raw key that merely looked URL-encoded
                info = storage.head(key)
            except ObjectNotFoundError:
                return _Outcome(SKIPPED, bucket=bucket, key=key, code="NoSuchKey", detail="object is gone")
        else:
            return _Outcome(SKIPPED, bucket=bucket, key=key, code="NoSuchKey", detail="object is gone")

    # The media type decides the route, so sniff before routing; a file no parser knows is a failure.
    try:
        media = probe_media(storage.reader(key), info.size)
    except MediaError as error:
        action_name, coded = _unreadable(key, error, deps)
        write_failure(deps, storage, key=key, etag=info.etag, action=action_name, error=coded)
        return _Outcome(FAILED, bucket=bucket, key=key, action=action_name, code=coded.code)

    chosen = route(key, media.media, deps.rules)
    if chosen is None:  # pragma: no cover - probe_media only knows images and videos
        no_route = InputValidationError(f"no route for media {media.media}", code="InvalidFile.Type")
        write_failure(deps, storage, key=key, etag=info.etag, action=None, error=no_route)
        return _Outcome(FAILED, bucket=bucket, key=key, code=no_route.code)
    try:
        action = get_action(chosen.action)
        if action.media != media.media:
            raise InputValidationError(
                f"{action.name} takes {action.media} files; {key} is a {media.format} {media.media}",
                code=action.codes.format,
                http_status=action.codes.http_status,
            )
    except (UnknownActionError, InputValidationError) as error:
        write_failure(deps, storage, key=key, etag=info.etag, action=chosen.action, error=error)
        return _Outcome(FAILED, bucket=bucket, key=key, action=chosen.action, code=error.code)

    store = deps.job_store(storage)
    claim = store.begin(
        bucket, key, info.etag, action.name, chosen.params, size=info.size, region=record.region
    )
    if claim.outcome == DUPLICATE:
        if claim.record.state == DONE_STATE:
            # A result exists: an older failure record of this key must not (finishes an interrupted
            # cleanup; a no-op delete otherwise).
            clear_stale_failure(deps, storage, key)
        return _Outcome(
            DUPLICATE_OUTCOME,
            bucket=bucket,
            key=key,
            action=action.name,
            request_id=claim.record.request_id,
            detail=claim.record.state,
        )
    if claim.outcome != ACQUIRED:
        busy = RecordInProgressError(f"{key} is being processed by another invocation")
        return _Outcome(RETRY, bucket=bucket, key=key, action=action.name, code=busy.code, error=busy)

    job = claim.record
    try:
        return _submit(record, deps, storage, store, job, action, media, info, chosen.rule)
    except SegflowError as raised:
        failure = raised
        if isinstance(raised, _AnswerNotStoredError):
            job, failure = raised.record, raised.error  # release the record with the paid answer in it
        released = job.evolve(error=error_record(deps, failure))
        if is_retryable_failure(failure) and job.attempts < deps.max_event_attempts:
            retry_in_place(deps, lambda: store.release(released), what=f"releasing the record of {key}")
            return _Outcome(
                RETRY, bucket=bucket, key=key, action=action.name, code=failure.code, error=failure
            )
        if job.outputs:
            # The result is stored, only the record could not say so: the result is this input's outcome,
            # not a failure. The record handed back lists it, so a re-drive marks it done without a call.
            retry_in_place(deps, lambda: store.release(released), what=f"releasing the record of {key}")
            return _Outcome(
                DONE, bucket=bucket, key=key, action=action.name, code=failure.code, detail="record not done"
            )
        current = store.load(job.record_id) or job
        try:
            write_failure(
                deps,
                storage,
                key=key,
                etag=info.etag,
                action=action.name,
                error=failure,
                store=store,
                record=current,
            )
            if current.submit_key:
                storage.delete(current.submit_key)
        except SegflowError as storing:
            # The failure could not be recorded: hand the record back so the retried event records it.
            store.release(current)
            return _Outcome(
                RETRY, bucket=bucket, key=key, action=action.name, code=storing.code, error=storing
            )
        return _Outcome(
            FAILED,
            bucket=bucket,
            key=key,
            action=action.name,
            code=failure.code,
            request_id=failure.request_id,
        )
    except Exception:
        # A bug or an unexpected library error: give the record back so the retried event can proceed.
        store.release(job)
        raise


def _submit(
    record: OssRecord,
    deps: Deps,
    storage: Storage,
    store: JobStore,
    job: JobRecord,
    action: Action,
    media: MediaInfo,
    info: ObjectInfo,
    rule: str,
) -> _Outcome:
    settings = deps.settings
    bucket, key = job.bucket, job.key
    reads_bucket = action.product in ALIBABA_PRODUCTS and service_reads_bucket(settings, action)
    if settings.require_region and reads_bucket and record.region != settings.region:
        raise InputValidationError(
            f"the service only reads OSS objects in {settings.region}; bucket {bucket} is in {record.region}",
            code=f"{action.error_prefix}.Region",
            http_status=400,
        )
    if not _holds_answer(deps, job, action):
        job = _fit_if_needed(deps, storage, store, job, action, media, info)
        url = input_url(deps, storage, job.submit_key or key, action)
        job = _with_answer(deps, job, action, call_action(deps, action, url, job.params))
    return _store_answer(deps, storage, store, job, action, rule)


def _holds_answer(deps: Deps, job: JobRecord, action: Action) -> bool:
    """An earlier delivery paid for the call but could not store its answer: store that one instead."""
    if job.outputs or (is_async_call(action, job.params) and job.job_id):
        return True  # a stored result only needs its record marked done; a JobId can be collected any time
    expires_at = job.answer_expires_at
    return (
        job.answer is not None
        and expires_at is not None
        and deps.clock() < expires_at - RESUME_MARGIN_SECONDS
    )


def _with_answer(deps: Deps, job: JobRecord, action: Action, result: SegmentResult) -> JobRecord:
    now = deps.clock()
    if is_async_call(action, job.params) and result.job_id:
        return job.evolve(job_id=result.job_id, request_id=result.request_id, submitted_at=now)
    return job.evolve(
        request_id=result.request_id,
        submitted_at=now,
        answer=_answer_record(result),
        answer_expires_at=now + RESULT_URL_SECONDS,
    )


def _store_answer(
    deps: Deps, storage: Storage, store: JobStore, job: JobRecord, action: Action, rule: str
) -> _Outcome:
    """Queue the job or store the result the record holds; the writes are retried in place (see
    `retry_in_place`): once the call is paid for, a storage hiccup must not make FC's retry pay again.
    When they still fail, `_AnswerNotStoredError` carries the record with all that got done."""
    bucket, key = job.bucket, job.key
    try:
        job_id = job.job_id
        if is_async_call(action, job.params) and job_id:
            queued = retry_in_place(
                deps,
                lambda: store.mark_submitted(job, job_id=job_id, request_id=job.request_id),
                what=f"queueing job {job_id} of {key}",
            )
            return _Outcome(
                SUBMITTED, bucket=bucket, key=key, action=action.name, request_id=queued.request_id
            )
        if not job.outputs:
            result = _answer_from_record(job.answer or {})
            if not result.output_urls() and not action.elements:
                # Only element actions may legitimately find nothing (no face, no head); an empty cut-out
                # answer would otherwise end as a result with no file in it.
                raise JobFailedError(
                    f"{action.name} answered without a result URL",
                    code="EmptyResult",
                    request_id=result.request_id,
                )
            stored = retry_in_place(
                deps,
                lambda: store_result(
                    storage,
                    deps.http,
                    deps.layout,
                    job,
                    result,
                    completed_at=deps.clock(),
                    limits=Downloads(deps.download_timeout),
                    rule=rule,
                ),
                what=f"storing the result of {key}",
            )
            job = job.evolve(outputs=stored.keys, answer=None, answer_expires_at=None)
        retry_in_place(
            deps,
            lambda: store.mark_done(job, outputs=job.outputs, request_id=job.request_id),
            what=f"marking {key} done",
        )
    except SegflowError as error:
        raise _AnswerNotStoredError(error, job) from error
    # The record is done from here on: a failing cleanup must not hand it back (that would pay again).
    try:
        clear_stale_failure(deps, storage, key)
        if job.submit_key:
            storage.delete(job.submit_key)
    except SegflowError as error:
        # FC's retry finds the record done and finishes the cleanup (see the duplicate path).
        return _Outcome(RETRY, bucket=bucket, key=key, action=action.name, code=error.code, error=error)
    return _Outcome(DONE, bucket=bucket, key=key, action=action.name, request_id=job.request_id)


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


def _fit_if_needed(
    deps: Deps,
    storage: Storage,
    store: JobStore,
    job: JobRecord,
    action: Action,
    media: MediaInfo,
    info: ObjectInfo,
) -> JobRecord:
    """Validate against the action's limits; under `fit`, submit a converted/scaled copy instead of
    failing. Raises the original `LimitViolationError` when no copy can help."""
    violations = limit_violations(action, media, info.size)
    if not violations:
        return job
    try:
        validate_against_limits(action, media, info.size)
    except LimitViolationError as original_error:
        if deps.settings.oversize != "fit":
            raise
        from segflow import imagefit  # only oversize images need it (and Pillow)

        reasons = imagefit.fit_reasons(action, original_error.kinds, media.width, media.height)
        if not reasons:
            raise
        try:
            plan = imagefit.prepare_fit(storage.get_bytes(job.key), action, reasons)
            copy_info = probe_media(lambda o, n: plan.data[o : o + n], len(plan.data))
            validate_against_limits(action, copy_info, len(plan.data))
        except InputValidationError:
            raise original_error from None
        work_key = deps.layout.work_key(job.record_id, plan.extension)
        storage.put_bytes(work_key, plan.data, content_type=plan.content_type)
        return store.save(job.evolve(submit_key=work_key, fit=plan.to_record()))
    return job  # pragma: no cover - limit_violations and validate_against_limits agree


def redrive_stalled(deps: Deps, job: JobRecord) -> str:
    """Process again an upload whose record is stuck in `submitting` (its owner died after FC stopped
    retrying the event): the same path as a redelivered event, so the claim takeover, the attempt count
    and the failure record after the last attempt all apply. Returns the outcome."""
    region = job.region or deps.settings.region
    raw = {
        "eventName": "ObjectCreated:Redrive",
        "eventSource": "segflow:collect_jobs",
        "eventTime": iso_time(deps.clock()),
        "region": region,
        "oss": {
            "bucket": {"name": job.bucket, "arn": f"acs:oss:{region}::{job.bucket}"},
            # Quoted, so the event wrapper's decode-once rule gives back exactly this key.
            "object": {"key": quote(job.key, safe="/"), "eTag": job.etag, "size": job.size or 0},
        },
    }
    t0 = time.monotonic()
    outcome = _process_record(OssRecord(raw, 0), deps)
    fields = outcome.fields()
    fields["redriven"] = True
    level = logging.WARNING if outcome.outcome in (FAILED, RETRY) else logging.INFO
    log_outcome(deps.logger, level, **fields, ms=(time.monotonic() - t0) * 1000.0)
    return outcome.outcome


def _unreadable(key: str, error: MediaError, deps: Deps) -> tuple[str | None, InputValidationError]:
    """The action the file would have gone to (media guessed from the probe, else the extension) and
    the error that action's service gives for a file it cannot read."""
    media = error.media or ("video" if key.lower().endswith(_VIDEO_EXTENSIONS) else "image")
    chosen = route(key, media, deps.rules)
    if chosen is None:
        return None, error
    try:
        return chosen.action, media_error_for_action(get_action(chosen.action), error)
    except UnknownActionError:
        return chosen.action, error


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None
