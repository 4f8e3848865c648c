"""What both services share: calling the chosen action, deciding retry vs record, writing failures."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from segflow.catalogue import Action
from segflow.errors import (
    ApiError,
    DeadlineError,
    InputValidationError,
    ObjectNotFoundError,
    ResultDownloadError,
    SegflowError,
    StorageError,
)
from segflow.jobs import JobRecord, JobStore
from segflow.outputs import failure_document, write_json
from segflow.results import SegmentResult
from segflow.retry import is_retryable_error
from segflow.services.deps import Deps
from segflow.storage.base import Storage

IN_PROGRESS_CODE = "RecordInProgress"
# The service answers these with its own string-to-sign, which carries the AccessKeyId and the STS token.
PICWISH_MAX_URL = 512  # seed 004: image_url at most 512 characters
SIGNATURE_CODES = frozenset({"SignatureDoesNotMatch", "IncompleteSignature"})
_PERMANENT_DOWNLOAD_CODES = frozenset({"ResultTooLarge", "ResultExpired"})

T = TypeVar("T")


class RecordInProgressError(SegflowError):
    """Another invocation owns this object's record right now; the event is retried later by FC."""

    default_code = IN_PROGRESS_CODE


def is_retryable_failure(error: SegflowError) -> bool:
    """Worth letting FC retry the event: throttling and 5xx that outlived the client's retries, broken
    downloads (a new call gives fresh URLs), storage hiccups, an object busy in another invocation."""
    if isinstance(error, ApiError):
        return is_retryable_error(error)
    if isinstance(error, ResultDownloadError):
        return error.code not in _PERMANENT_DOWNLOAD_CODES
    if isinstance(error, ObjectNotFoundError):
        return False
    if isinstance(error, StorageError):
        # A refused request (invalid key, denied) will be refused again; 5xx, timeouts and throttling pass.
        status = error.http_status
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return False
        return error.code != "CorruptJobRecord"
    return isinstance(error, (RecordInProgressError, DeadlineError))


def retry_in_place(deps: Deps, write: Callable[[], T], *, what: str) -> T:
    """`write()`, tried again on a transient storage error (5xx, connection, throttling) with the backoff of
    `deps.storage_retry`; any other error, or the last one once the bounds are hit, is raised as is.

    For the writes that follow a paid call: handing the record back to FC over a storage hiccup would make
    the retried event pay for the call again. (`RetryPolicy.run` retries API errors only.)
    """
    policy = deps.storage_retry
    started = policy.clock()
    number = 1
    while True:
        try:
            return write()
        except StorageError as error:
            if not is_retryable_failure(error) or number >= policy.max_attempts:
                raise
            delay = policy.backoff(number)
            if policy.clock() - started + delay > policy.max_total:
                raise
            deps.logger.warning(
                "%s: attempt %d failed with %s (HTTP %s); retrying in %.2fs",
                what,
                number,
                error.code,
                error.http_status,
                delay,
            )
            policy.sleep(delay)
            number += 1


def call_action(deps: Deps, action: Action, url: str, params: Mapping[str, str]) -> SegmentResult:
    """One segmentation call to imageseg/videoseg or PicWish (rate limited and retried inside)."""
    if action.product == "picwish":
        if len(url) > PICWISH_MAX_URL:
            # PicWish refuses longer image_url values; an OSS URL presigned with an STS token (as inside
            # FC) easily passes 512 characters.
            raise InputValidationError(
                f"PicWish takes an image_url of at most {PICWISH_MAX_URL} characters; the presigned URL of "
                f"this object has {len(url)} (STS-signed OSS URLs are long: use a shorter key or imageseg)",
                code="InvalidParameter",
                http_status=400,
            )
        client = deps.picwish_client()
        return client.segment(
            url,
            type=params.get("type", ""),
            output_type=_int_param(params, "output_type", 2),
            crop=_int_param(params, "crop", 0),
            format=params.get("format", "png"),
            bg_color=params.get("bg_color") or None,
        )
    return deps.vision.segment(action.name, url, params)


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InputValidationError(f"PicWish {name} must be an integer, got {value!r}") from exc


def safe_message(deps: Deps, error: SegflowError) -> str:
    """The error's message as it may be stored or logged: never a secret, token or signature."""
    if error.code in SIGNATURE_CODES:
        return (
            "the service refused the request signature; its message (which echoes the string to sign, "
            "credentials included) is not kept. Check the AccessKey, the clock and SEGFLOW_SIGNATURE_VERSION."
        )
    from segflow.logs import redact

    return redact(error.message, deps.secrets())


def error_record(deps: Deps, error: SegflowError) -> dict[str, object]:
    """`error.to_record()` with the message made safe to store in a job record."""
    record = error.to_record()
    record["message"] = safe_message(deps, error)
    return record


def write_failure(
    deps: Deps,
    storage: Storage,
    *,
    key: str,
    etag: str | None,
    action: str | None,
    error: SegflowError,
    store: JobStore | None = None,
    record: JobRecord | None = None,
) -> str:
    """The one failure record `<failed>/<source key>.json`, and the job record marked failed."""
    failure_key = deps.layout.failure_key(key)
    document = failure_document(
        bucket=storage.bucket,
        key=key,
        etag=etag,
        action=action,
        error=error,
        at=deps.clock(),
        message=safe_message(deps, error),
    )
    if record is not None:
        document["RecordId"] = record.record_id
        document["JobId"] = record.job_id
    write_json(storage, failure_key, document)
    if store is not None and record is not None:
        store.mark_failed(record, error_record(deps, error))
    return failure_key


def clear_stale_failure(deps: Deps, storage: Storage, key: str) -> None:
    """A new version (or a later attempt) succeeded: an old failure record would contradict the result."""
    storage.delete(deps.layout.failure_key(key))
