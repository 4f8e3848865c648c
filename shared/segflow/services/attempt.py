"""One uploaded object through its action: the steps of on_upload, each a function named after it.

    locate      the key the event names (decoded, or raw), checked against the input and own prefixes
    identify    its media type from the magic bytes, the routing rule, the action
    claim       the idempotency record (a duplicate or a busy object stops here)
    validate    region, every derived key fits, the action's limits
    fit         under SEGFLOW_OVERSIZE=fit, a converted copy for an image beyond the limits
    submit, store_or_queue, settle   after the paid call: `services.paid`

`services.upload` runs them in that order for every record of an event.
"""

import logging
from typing import Any, NamedTuple

from segflow.catalogue import Action, get_action
from segflow.errors import (
    EventError,
    InputValidationError,
    ObjectNotFoundError,
    SegflowError,
    UnknownActionError,
)
from segflow.events import OssRecord
from segflow.failure_policy import Decision, RecordInProgressError, decide
from segflow.media import MediaError, MediaInfo, probe_media
from segflow.records import JobRecord, RecordStore
from segflow.routing import Route, route
from segflow.services.common import clear_stale_failure, write_failure
from segflow.services.deps import Deps
from segflow.services.inputs import service_reads_bucket
from segflow.states import ClaimOutcome, Outcome, RecordState
from segflow.storage.base import ObjectInfo, Storage
from segflow.validation import (
    LimitViolationError,
    limit_violations,
    media_error_for_action,
    media_mismatch,
    unreadable_failure,
    validate_against_limits,
)

ALIBABA_PRODUCTS = frozenset({"imageseg", "videoseg"})


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
        "mask",
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
        self.mask: ObjectInfo | None = None
        """RefineMask pairs: the coarse mask that goes with this image (`services.pairs`)."""

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
        action_name, coded = unreadable_failure(attempt.key, error, deps.rules)
        return attempt.fail(coded, action_name)
    attempt.route = route(attempt.key, attempt.media.media, deps.rules)
    if attempt.route is None:  # pragma: no cover - probe_media only knows images and videos
        return attempt.fail(
            InputValidationError(f"no route for {attempt.media.media}", code="InvalidFile.Type")
        )
    try:
        action = get_action(attempt.route.action)
        mismatch = media_mismatch(action, attempt.key, attempt.media)
        if mismatch is not None:
            raise mismatch
    except (UnknownActionError, InputValidationError) as error:
        return attempt.fail(error, attempt.route.action)
    attempt.action = action
    return None


# -- claim --------------------------------------------------------------------------------------------


def claim(attempt: UploadAttempt) -> RecordOutcome | None:
    """Take the idempotency record; a duplicate delivery or an object busy elsewhere stops here."""
    assert attempt.action is not None and attempt.route is not None
    records = attempt.deps.records(attempt.storage)
    info, mask = attempt.info, attempt.mask
    taken = records.begin(
        attempt.bucket,
        attempt.key,
        info.etag if mask is None else f"{info.etag}+{mask.etag}",
        attempt.action.name,
        attempt.route.params,
        size=info.size,
        region=attempt.event.region,
        mask_key=mask.key if mask is not None else None,
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
    if attempt.mask is not None:
        _validate_mask(attempt, action, attempt.mask)


def _validate_mask(attempt: UploadAttempt, action: Action, mask: ObjectInfo) -> None:
    """A pair's coarse mask meets the action's limits as it is (it is never fitted: its pixels must stay
    the image's)."""
    try:
        media = probe_media(attempt.storage.reader(mask.key), mask.size)
    except MediaError as error:
        coded = media_error_for_action(action, error)
        raise InputValidationError(
            f"the mask {mask.key}: {coded.message}", code=coded.code, http_status=coded.http_status
        ) from None
    try:
        validate_against_limits(action, media, mask.size)
    except InputValidationError as error:
        raise InputValidationError(
            f"the mask {mask.key}: {error.message}", code=error.code, http_status=error.http_status
        ) from None


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
        if deps.settings.oversize != "fit" or attempt.mask is not None:
            raise  # a pair is never fitted: the image and its mask must keep one size
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


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
