"""The states of an idempotency record and the outcomes the services report, as enums.

They are `str` enums: a record's JSON and a summary's JSON hold the plain values (`"done"`), and a value
read back compares equal to its member.
"""

from __future__ import annotations

from enum import Enum


class RecordState(str, Enum):
    """Where one (bucket, key, ETag, action) stands: created `submitting`, then `submitted` (an async job
    is queued), then `done`, `failed`, or `superseded` (the object was overwritten or deleted before this
    version's outcome could be published: nothing was written for it)."""

    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    DONE = "done"
    FAILED = "failed"
    SUPERSEDED = "superseded"

    @property
    def final(self) -> bool:
        return self in (RecordState.DONE, RecordState.FAILED, RecordState.SUPERSEDED)


class ClaimOutcome(str, Enum):
    """What taking a record means for this delivery: go on, skip it, or let it be retried later."""

    ACQUIRED = "acquired"
    DUPLICATE = "duplicate"
    IN_PROGRESS = "in_progress"


class Outcome(str, Enum):
    """How one record of an event (on_upload) or one claimed job (collect_jobs) ended."""

    DONE = "done"
    SUBMITTED = "submitted"
    FAILED = "failed"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    """Retryable: the record is handed back and the event raised, so FC delivers it again."""
    FAULT = "fault"
    """A deployment fault (keys, permissions, AppCode, product not activated): retryable once fixed."""
    WAITING = "waiting"
    """Half of a RefineMask pair: it waits for the other half (recorded), nothing called yet."""
    DEFERRED = "deferred"
    """Not started before the invocation's deadline: left to the redelivery (and the collector)."""
    SUPERSEDED = "superseded"
    """The object was overwritten or deleted meanwhile: this version's result or failure is not written
    (the current version's own event decides the outcome); never redriven."""
    PENDING = "pending"
    RESUBMITTED = "resubmitted"
    GONE = "gone"
    """Finished by someone else meanwhile: only the pending entry was cleaned up."""
    ERRORS = "errors"
