"""One failure policy: what an error means for the object (or job) it happened to.

`decide(error)` reads `RULES` top to bottom, first match wins, else `RECORD` (`Decisions` says what each
decision does); which API codes are transient is `segflow.retry.RETRY_TABLE`. Also here: the predicate of
the in-place retry of writes after a paid call (`transient_storage_error`) and the per-record isolation
every service uses (`isolated`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Literal, TypeVar

from segflow.errors import (
    ApiError,
    ConfigError,
    DeadlineError,
    EventError,
    JobFailedError,
    ObjectNotFoundError,
    ResultDownloadError,
    SegflowError,
    StorageError,
    TempUploadError,
    UnknownActionError,
)
from segflow.retry import is_retryable_error
from segflow.values import Value

T = TypeVar("T")

IN_PROGRESS_CODE = "RecordInProgress"


Decision = Literal["retry", "fault", "skip", "record"]
"""What an error means for its object (`Decisions`)."""


class Decisions:
    RETRY: Final = "retry"
    """The same attempt may well succeed later (throttling and 5xx that outlived the client's own retries,
    broken downloads, storage hiccups, another invocation holding the object, the deadline): the record
    is handed back and FC's retry (or the next collector tick) tries again."""
    FAULT: Final = "fault"
    """The deployment is wrong (AccessKey, signature, expired STS token, RAM denial of the vision APIs or of
    the bucket, PicWish AppCode, a product not activated, configuration): every object would fail alike
    and all will be fine once it is fixed, so none is recorded as failed for good; the fault is logged
    loudly and written where an operator sees it, and the object stays retryable."""
    SKIP: Final = "skip"
    """Nothing to do and nothing can be recorded (the object is gone, a key no store can hold)."""
    RECORD: Final = "record"
    """The object itself cannot be processed: one failure record with the service's code."""


class RecordInProgressError(SegflowError):
    """Another invocation owns this object's record right now; the event is retried later by FC."""

    default_code = IN_PROGRESS_CODE


class PublishBusyError(RecordInProgressError):
    """Another invocation is publishing an outcome of the same key right now (`services.publish`): no
    attempt of this object failed, so it does not count towards the deliveries before a failure record."""

    default_code = "PublishBusy"


# Code families (the part before the first dot counts too) that say the deployment is wrong, whatever the
# product: imageseg/videoseg error tables (InvalidAccessKeyId.NotFound, SignatureDoesNotMatch,
# InvalidApi.NotPurchase, Unauthorized, InvalidTimeStamp.Expired), STS (InvalidSecurityToken.Expired),
# RAM (Forbidden.RAM, NoPermission), PicWish's AppCode answers (HTTP 401/403).
DEPLOYMENT_CODE_FAMILIES = frozenset(
    {
        "InvalidAccessKeyId",
        "InvalidSecurityToken",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "Unauthorized",
        "Forbidden",
        "NoPermission",
        "InvalidApi",
        "InvalidTimeStamp",
        "InvalidConfiguration",
        "PicWish.Unauthorized",
        "PicWish.Forbidden",
    }
)
UNSTORABLE_CODES = frozenset({"InvalidObjectName", "KeyTooLong", "InvalidBucketName"})
PERMANENT_DOWNLOAD_CODES = frozenset({"ResultTooLarge", "ResultExpired"})


def _family_match(code: str, families: frozenset[str]) -> bool:
    return code in families or any(code.startswith(f + ".") for f in families)


def _deployment_api_error(error: SegflowError) -> bool:
    if isinstance(error, (JobFailedError, TempUploadError)):
        return False  # how a job ended, or a refused input upload, is about that job or that upload
    return isinstance(error, ApiError) and (
        error.http_status in (401, 403) or _family_match(error.code, DEPLOYMENT_CODE_FAMILIES)
    )


def _transient_storage(error: SegflowError) -> bool:
    if not isinstance(error, StorageError) or isinstance(error, ObjectNotFoundError):
        return False
    if error.code == "CorruptJobRecord" or error.code in UNSTORABLE_CODES:
        return False
    # A refused request (invalid key, denied) will be refused again; 5xx, timeouts and throttling pass.
    status = error.http_status
    return status is None or not (400 <= status < 500) or status in (408, 429)


class Rule(Value):
    """`decision` for the errors `matches` accepts."""

    name: str
    matches: Callable[[SegflowError], bool]
    decision: Decision


RULES: tuple[Rule, ...] = (
    Rule("busy elsewhere", lambda e: isinstance(e, RecordInProgressError), Decisions.RETRY),
    Rule("deadline", lambda e: isinstance(e, DeadlineError), Decisions.RETRY),
    Rule(
        "configuration",
        lambda e: isinstance(e, ConfigError) and not isinstance(e, UnknownActionError),
        Decisions.FAULT,
    ),
    Rule("deployment", _deployment_api_error, Decisions.FAULT),
    Rule(
        "bucket access denied",
        lambda e: isinstance(e, StorageError) and e.http_status == 403,
        Decisions.FAULT,
    ),
    Rule("job ended badly", lambda e: isinstance(e, JobFailedError), Decisions.RECORD),
    Rule("transient API error", lambda e: isinstance(e, ApiError) and is_retryable_error(e), Decisions.RETRY),
    Rule(
        "broken download",
        lambda e: isinstance(e, ResultDownloadError) and e.code not in PERMANENT_DOWNLOAD_CODES,
        Decisions.RETRY,
    ),
    Rule(
        "unstorable key", lambda e: isinstance(e, StorageError) and e.code in UNSTORABLE_CODES, Decisions.SKIP
    ),
    Rule("transient storage error", _transient_storage, Decisions.RETRY),
    Rule("unreadable event", lambda e: isinstance(e, EventError), Decisions.SKIP),
)


def decide(error: SegflowError) -> Decision:
    """The first rule of `RULES` that matches, else `RECORD`."""
    for rule in RULES:
        if rule.matches(error):
            return rule.decision
    return Decisions.RECORD


def is_retryable_failure(error: SegflowError) -> bool:
    """Worth letting FC (or the next tick) try again as is."""
    return decide(error) == Decisions.RETRY


def is_deployment_error(error: SegflowError) -> bool:
    """About the deployment (credentials, permissions, configuration), not about an object."""
    return decide(error) == Decisions.FAULT


def transient_storage_error(error: SegflowError) -> bool:
    """The retry predicate of writes that follow a paid call: only storage hiccups are retried in place
    (handing the record back to FC over one would pay for the call again)."""
    return _transient_storage(error)


def isolated(
    work: Callable[[], T], on_unexpected: Callable[[Exception], T], *, logger: logging.Logger, what: str
) -> T:
    """`work()`, with any unexpected exception (a bug, a library error) logged and turned into
    `on_unexpected(exc)`: one record or job never stops the others."""
    try:
        return work()
    except Exception as exc:
        logger.exception("%s failed unexpectedly", what)
        return on_unexpected(exc)
