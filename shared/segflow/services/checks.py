"""What is checked, or made to fit, before a call is paid for.

validate   the region (for a service that reads the bucket), the room every result key needs, a pair's
           mask against the action's limits: raises `InputValidationError`
fit        under SEGFLOW_OVERSIZE=fit, a converted copy of an image beyond the limits, in
           `<jobs>/work/` (the record names it: `submit_key`, `fit`)
"""

from segflow.catalogue import Action
from segflow.errors import InputValidationError
from segflow.media import MediaError, probe_media
from segflow.records import JobRecord, RecordStore
from segflow.services.common import service_reads_bucket
from segflow.services.deps import Deps
from segflow.services.stages import Identified
from segflow.storage.base import ObjectInfo
from segflow.validation import (
    LimitViolationError,
    limit_violations,
    media_error_for_action,
    validate_against_limits,
)

ALIBABA_PRODUCTS = frozenset({"imageseg", "videoseg"})


def validate(item: Identified, deps: Deps) -> None:
    """Everything that can refuse the object before a call: the region, the room its results need."""
    settings, action = deps.settings, item.action
    region = item.event.region
    # Only a service that reads the user's bucket (a presigned URL) cares where it is; an uploaded input
    # is read from the service's own temporary bucket.
    reads_bucket = action.product in ALIBABA_PRODUCTS and service_reads_bucket(settings, action)
    if settings.require_region and reads_bucket and region != settings.region:
        raise InputValidationError(
            f"the service only reads OSS objects in {settings.region}; "
            f"bucket {item.storage.bucket} is in {region}",
            code=f"{action.error_prefix}.Region",
            http_status=400,
        )
    if not deps.layout.derived_keys_fit(item.storage, item.key, action.name):
        raise InputValidationError(
            f"the results of {action.name} for this key would not fit in an object name (at most 1023 "
            "bytes, and what the bucket store allows): use a shorter key",
            code="KeyTooLong",
            http_status=400,
        )
    if item.mask is not None:
        _validate_mask(item, action, item.mask)


def _validate_mask(item: Identified, action: Action, mask: ObjectInfo) -> None:
    """A pair's coarse mask meets the action's limits as it is (it is never fitted: its pixels must stay
    the image's)."""
    try:
        media = probe_media(item.storage.reader(mask.key), mask.size)
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


def fit(item: Identified, deps: Deps, records: RecordStore, job: JobRecord) -> JobRecord:
    """Check the action's limits; under `fit`, the record names a converted/scaled copy to submit instead
    of failing. Raises the original `LimitViolationError` when no copy can help."""
    action, media, size = item.action, item.media, item.info.size
    if not limit_violations(action, media, size):
        return job
    try:
        validate_against_limits(action, media, size)
        return job  # pragma: no cover - limit_violations and validate_against_limits agree
    except LimitViolationError as original_error:
        if deps.settings.oversize != "fit" or item.mask is not None:
            raise  # a pair is never fitted: the image and its mask must keep one size
        from segflow import imagefit  # only oversize images need it (and Pillow)

        reasons = imagefit.fit_reasons(action, original_error.kinds, media.width, media.height)
        if not reasons:
            raise
        try:
            plan = imagefit.prepare_fit(item.storage.get_bytes(job.key), action, reasons)
            copy_info = probe_media(lambda o, n: plan.data[o : o + n], len(plan.data))
            validate_against_limits(action, copy_info, len(plan.data))
        except InputValidationError:
            raise original_error from None
    work_key = deps.layout.work_key(job.record_id, plan.extension)
    item.storage.put_bytes(work_key, plan.data, content_type=plan.content_type)
    return records.save(job.with_payload(submit_key=work_key, fit=plan.to_record()))
