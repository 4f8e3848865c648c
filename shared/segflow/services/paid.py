"""One owner for a paid call: claim → count → call → keep → store or queue → release or record.

`pay` claims the record and hands it to `PaidCall`, which decides every step after that; `PaidCall._settle`
is the one place a failure becomes retry, fault or a failure record; `refuse` records what failed before
any record existed. Why: shared/ARCHITECTURE.md, "One owner for a paid call".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from segflow.catalogue import Action, is_async_call
from segflow.deadline import Deadline
from segflow.errors import ApiConnectionError, ApiError, JobFailedError, ObjectNotFoundError, SegflowError
from segflow.failure_policy import (
    Decisions,
    PublishBusyError,
    RecordInProgressError,
    decide,
    transient_storage_error,
)
from segflow.jobqueue import queue_job
from segflow.outputs import Downloads, store_result
from segflow.records import JobRecord, RecordStore, Taken
from segflow.results import Element, SegmentResult
from segflow.services.checks import fit, validate
from segflow.services.common import call_action, error_record, failure_record, input_url
from segflow.services.deps import Deps
from segflow.services.publish import Publisher, Version
from segflow.services.stages import Claimed, Identified, RecordOutcome, Refusal, ended
from segflow.states import ClaimOutcomes, Outcome, Outcomes, RecordStates

T = TypeVar("T")

MAX_PAID_CALLS = 2
"""Paid calls one (object, ETag, action) may ever cost: the first, and one more when its answer was lost
before it could be kept (a crash between the call and the record). Resubmissions of a job the service
ended with LIMIT_RETRY_FAILED are bounded apart (SEGFLOW_MAX_RESUBMITS)."""
_SUPERSEDED = "the object was overwritten or deleted meanwhile: this version's outcome is not written"


def pay(item: Identified, deps: Deps, deadline: Deadline) -> RecordOutcome:
    """Claim the object's record and see its paid call through; a duplicate delivery or an object busy
    elsewhere stops at the claim."""
    publisher = Publisher(deps, item.storage, deadline)
    records = deps.records(item.storage)
    try:
        taken = _begin(item, deps, records, deadline)
        if taken.outcome == ClaimOutcomes.DUPLICATE and _replaced(item, deps, taken.record):
            # This content was done once, then a newer version's result replaced it, and now it is back (the
            # same bytes uploaded again): the result must be this version's again.
            records.mark_superseded(taken.record)
            taken = _begin(item, deps, records, deadline)
        if taken.outcome == ClaimOutcomes.DUPLICATE:
            if taken.record.state == RecordStates.DONE:
                # A result exists: an older failure record of this key must not (an interrupted cleanup).
                publisher.clear_failure(Version.of(taken.record))
            state = taken.record.state
            return item.outcome(Outcomes.DUPLICATE, request_id=taken.record.payload.request_id, detail=state)
    except SegflowError as error:
        return refuse(deps, publisher, Refusal(item.located, error, item.action.name))
    if taken.outcome == ClaimOutcomes.IN_PROGRESS:
        return item.outcome(Outcomes.RETRY, RecordInProgressError(f"{item.key} is being processed elsewhere"))
    return PaidCall(deps, publisher, Claimed(item, records, taken.record), deadline).run()


def _begin(item: Identified, deps: Deps, records: RecordStore, deadline: Deadline) -> Taken:
    return records.begin(
        item.storage.bucket,
        item.key,
        item.etag,
        item.action.name,
        item.route.params,
        size=item.info.size,
        region=item.event.region,
        mask_key=item.mask.key if item.mask is not None else None,
        hold_seconds=deps.hold_seconds(deadline),
    )


def _replaced(item: Identified, deps: Deps, record: JobRecord) -> bool:
    """A done record whose result folder now holds another version's result (one read)."""
    if record.state != RecordStates.DONE:
        return False
    try:
        manifest = json.loads(item.storage.get_bytes(deps.layout.manifest_key(record.key, record.action)))
        return bool(manifest["Source"]["ETag"] != record.etag)
    except ObjectNotFoundError:
        return False
    except (ValueError, KeyError, TypeError):
        return False  # not a manifest we wrote: leave it to a person


def refuse(deps: Deps, publisher: Publisher, refusal: Refusal) -> RecordOutcome:
    """What failed before the object had a record (probe reads, an unreadable file, taking the record):
    retry, deployment fault, skip, or the version's failure record (unless it is no longer current)."""
    located, error, action = refusal.located, refusal.error, refusal.action
    bucket = located.storage.bucket
    decision = decide(error)
    if decision == Decisions.RECORD:
        document = failure_record(deps, bucket, located.version, action=action, error=error)
        try:
            written = publisher.failure(located.version, document)
        except SegflowError as storing:
            return refuse(deps, publisher, Refusal(located, _unrecordable(storing), action))
        if written is None:
            return ended(Outcomes.SUPERSEDED, bucket, located.key, action, error, detail=_SUPERSEDED)
        return ended(Outcomes.FAILED, bucket, located.key, action, error)
    if decision == Decisions.SKIP:
        return ended(Outcomes.SKIPPED, bucket, located.key, action, error, detail=error.message)
    outcome: Outcome = Outcomes.RETRY if decision == Decisions.RETRY else Outcomes.FAULT
    return ended(outcome, bucket, located.key, action, error)


def _unrecordable(error: SegflowError) -> SegflowError:
    """A failure record that could not be written is retried, whatever the storage said (never a loop)."""
    if decide(error) == Decisions.RECORD:
        return RecordInProgressError(f"the failure record could not be written: {error.message}")
    return error


class PaidCall:
    """The owner of one claimed record, from the paid call to the record's last word."""

    __slots__ = ("claimed", "deadline", "deps", "job", "publisher")

    def __init__(self, deps: Deps, publisher: Publisher, claimed: Claimed, deadline: Deadline) -> None:
        self.deps = deps
        self.publisher = publisher
        self.claimed = claimed
        self.deadline = deadline
        self.job: JobRecord = claimed.job
        """The record as this owner last saved it, or will hand it back (with a paid answer in it)."""

    @property
    def item(self) -> Identified:
        return self.claimed.item

    @property
    def records(self) -> RecordStore:
        return self.claimed.records

    def run(self) -> RecordOutcome:
        try:
            validate(self.item, self.deps)
            if not holds_answer(self.job, self.item.action, self.deps.clock()):
                self._call()
            return self._store_or_queue()
        except SegflowError as error:
            return self._settle(error)
        except Exception:
            # A bug or an unexpected library error: give the record back so the retried event can proceed.
            self.records.release(self.job)
            raise

    # -- count, call, keep --------------------------------------------------------------------------------
    def _call(self) -> None:
        """The paid call, counted in the record before it is made, so whatever fails afterwards the bound
        holds; its answer is kept in `self.job` (saved when stored, or when the record is handed back)."""
        item, deps = self.item, self.deps
        if self.job.claim.calls >= MAX_PAID_CALLS:
            raise JobFailedError(
                f"{item.action.name} was already called {self.job.claim.calls} times for this object and "
                "its answer could not be kept; not calling again (redrive it once the bucket is writable)",
                code="PaidCallLimit",
            )
        self.job = fit(item, deps, self.records, self.job)
        url = input_url(deps, item.storage, self.job.payload.submit_key or item.key, item.action)
        params = dict(self.job.params)
        if self.job.mask_key:
            params["MaskImageURL"] = input_url(deps, item.storage, self.job.mask_key, item.action)
        self.job = self.records.note_call(self.job)
        try:
            result = call_action(deps, item.action, url, params)
        except ApiError as error:
            if error.http_status is not None and not isinstance(error, ApiConnectionError):
                # The service answered with an error: nothing was billed, the call does not count.
                self.job = self.job.with_claim(calls=self.job.claim.calls - 1)
            raise
        self.job = with_answer(self.job, item.action, result, deps.clock())

    # -- store or queue -----------------------------------------------------------------------------------
    def _store_or_queue(self) -> RecordOutcome:
        """Queue the job, or publish the result the record holds; the writes are retried in place (once the
        call is paid for, handing the record back over a storage hiccup would pay again)."""
        job = self.job
        job_id = job.payload.job_id
        if is_async_call(self.item.action, job.params) and job_id:
            queued = self._in_place(
                lambda: queue_job(
                    self.records, self.deps.queue(self.item.storage), job, job_id=job_id,
                    request_id=job.payload.request_id,
                ),
                "queueing the job",
            )  # fmt: skip
            return self.item.outcome(Outcomes.SUBMITTED, request_id=queued.payload.request_id)
        store = self._stored if job.payload.outputs else self._store()
        published = self.publisher.result(Version.of(job), store)
        if published is None:
            return self._superseded(self.job)
        outputs, unclean = published
        self.job = job.with_payload(outputs=outputs, answer=None, answer_expires_at=None)
        done = self.job
        self._in_place(
            lambda: self.records.mark_done(done, outputs=outputs, request_id=done.payload.request_id),
            "marking it done",
        )
        # The record is done from here on: a failing cleanup must not hand it back (that would pay again);
        # FC's redelivery finds the record done and finishes it (`pay`, a duplicate of a done record).
        unclean = unclean or self._drop_work_copy(done)
        if unclean is not None:
            return self.item.outcome(Outcomes.RETRY, unclean)
        return self.item.outcome(Outcomes.DONE, request_id=done.payload.request_id)

    def _stored(self) -> tuple[str, ...]:
        return self.job.payload.outputs  # stored by an earlier delivery: only the record was not done

    def _store(self) -> Callable[[], tuple[str, ...]]:
        """What writes the kept answer's result (checked first: only element actions may find nothing)."""
        job, action, deps = self.job, self.item.action, self.deps
        result = kept_answer(job.payload.answer or {})
        if not result.output_urls() and not action.elements:
            raise JobFailedError(
                f"{action.name} answered without a result URL",
                code="EmptyResult",
                request_id=result.request_id,
            )
        limits = Downloads(deps.download_timeout)  # `record_seconds` left room for it when the record began

        def store() -> tuple[str, ...]:
            stored = self._in_place(
                lambda: store_result(
                    self.item.storage, deps.http, deps.layout, job, result, completed_at=deps.clock(),
                    limits=limits, rule=self.item.route.rule,
                ),
                "storing the result",
            )  # fmt: skip
            return stored.keys

        return store

    def _superseded(self, current: JobRecord) -> RecordOutcome:
        """A newer version (or a deletion) owns the key now: this record ends, nothing is written."""
        self.job = self._in_place(lambda: self.records.mark_superseded(current), "marking it superseded")
        self._drop_work_copy(current)
        return self.item.outcome(Outcomes.SUPERSEDED, detail=_SUPERSEDED)

    def _drop_work_copy(self, job: JobRecord) -> SegflowError | None:
        """The fitted copy given to the service, deleted once the record has its last word."""
        if job.payload.submit_key:
            try:
                self.item.storage.delete(job.payload.submit_key)
            except SegflowError as error:
                return error
        return None

    def _in_place(self, write: Callable[[], T], what: str) -> T:
        return self.deps.storage_retry.run(
            write, what=f"{what} ({self.item.key})", retry_if=transient_storage_error
        )

    # -- release or record --------------------------------------------------------------------------------
    def _settle(self, error: SegflowError) -> RecordOutcome:
        """A step failed after the record was taken: the failure policy decides what it means."""
        job, records = self.job, self.records
        released = job.with_payload(error=error_record(self.deps, error))
        decision = decide(error)
        if decision == Decisions.FAULT:
            return self._fault(released, error)
        retries_left = job.claim.attempts < self.deps.max_event_attempts or isinstance(
            error, PublishBusyError
        )
        if decision == Decisions.RETRY and retries_left:
            self._in_place(lambda: records.release(released), "releasing the record")
            return self.item.outcome(Outcomes.RETRY, error)
        if job.payload.outputs:
            # The result is stored, only the record could not say so: the result is this input's outcome.
            # The record handed back lists it, so a redelivery marks it done without a call.
            self._in_place(lambda: records.release(released), "releasing the record")
            return self.item.outcome(Outcomes.DONE, code=error.code, detail="record not done")
        return self._record_failure(records.load(job.record_id) or released, error)

    def _fault(self, released: JobRecord, error: SegflowError) -> RecordOutcome:
        """Keys, permissions, AppCode, product: the object stays retryable (its record is handed back), and
        the fault is logged loudly and written where an operator finds it (the failure record says
        `Fault`), unless the object changed meanwhile."""
        action = self.item.action
        self.deps.logger.error(
            "deployment fault: %s refused %s with %s (HTTP %s); the object stays retryable and is processed "
            "once the deployment is fixed (redelivery or `segflow redrive`)",
            action.product,
            action.name,
            error.code,
            error.http_status,
        )
        try:
            held = self._in_place(lambda: self.records.release(released), "releasing the record")
            document = failure_record(
                self.deps, self.item.storage.bucket, Version.of(held), action=action.name, error=error,
                record=held, fault=True,
            )  # fmt: skip
            if self.publisher.failure(Version.of(held), document) is None:
                return self._superseded(held)
        except SegflowError as storing:
            self.deps.logger.warning(
                "the deployment fault of %s could not be written down: %s", self.item.key, storing.code
            )
        return self.item.outcome(Outcomes.FAULT, error)

    def _record_failure(self, current: JobRecord, error: SegflowError) -> RecordOutcome:
        version = Version.of(current)
        document = failure_record(
            self.deps, self.item.storage.bucket, version, action=self.item.action.name, error=error,
            record=current,
        )  # fmt: skip
        try:
            if self.publisher.failure(version, document) is None:
                return self._superseded(current)
            self.records.mark_failed(current, error_record(self.deps, error))
            dropping = self._drop_work_copy(current)
            if dropping is not None:
                raise dropping
        except SegflowError as storing:
            # The failure could not be recorded: hand the record back so the retried event records it.
            self.records.release(current)
            return self.item.outcome(Outcomes.RETRY, storing)
        return self.item.outcome(Outcomes.FAILED, error)


# -- the kept answer: what a synchronous call returned, kept in its record until it is stored -----------
# A delivery that finds it stores it instead of calling again, while its URLs live.

RESULT_URL_SECONDS = 1800.0  # imageseg result URLs live 30 minutes (PicWish's an hour)
RESUME_MARGIN_SECONDS = 300.0  # a kept answer is only worth storing with time left to download it
_ELEMENT_FIELDS = ("image_url", "x", "y", "width", "height", "name", "origin_image_url")
_ANSWER_FIELDS = ("action", "request_id", "image_url", "origin_image_url", "job_id", "mask_url", "video_url")


def holds_answer(job: JobRecord, action: Action, now: float) -> bool:
    """An earlier delivery paid for the call but could not store its answer: store that one instead."""
    payload = job.payload
    if payload.outputs or (is_async_call(action, job.params) and payload.job_id):
        return True  # a stored result only needs its record marked done; a JobId can be collected any time
    expires_at = payload.answer_expires_at
    return payload.answer is not None and expires_at is not None and now < expires_at - RESUME_MARGIN_SECONDS


def with_answer(job: JobRecord, action: Action, result: SegmentResult, now: float) -> JobRecord:
    """The record with what the call returned (the JobId, or the answer's result URLs)."""
    if is_async_call(action, job.params) and result.job_id:
        return job.with_payload(job_id=result.job_id, request_id=result.request_id, submitted_at=now)
    return job.with_payload(
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


def kept_answer(kept: Mapping[str, Any]) -> SegmentResult:
    """The answer a record keeps, as the call returned it."""
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
