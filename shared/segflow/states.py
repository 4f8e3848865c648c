"""The states of an idempotency record and the outcomes the services report, as plain strings.

Each is a `Literal` type that mypy checks, with its values named as constants (`RecordStates.DONE`): a
record's JSON and a summary's JSON hold the strings themselves. Why not `Enum`: shared/ARCHITECTURE.md,
"Cold start".
"""

from __future__ import annotations

from typing import Final, Literal, cast, get_args

RecordState = Literal["submitting", "submitted", "done", "failed", "superseded"]
"""Where one (bucket, key, ETag, action) stands: created `submitting`, then `submitted` (an async job is
queued), then `done`, `failed`, or `superseded` (the object was overwritten or deleted before this
version's outcome could be published: nothing was written for it)."""


class RecordStates:
    SUBMITTING: Final = "submitting"
    SUBMITTED: Final = "submitted"
    DONE: Final = "done"
    FAILED: Final = "failed"
    SUPERSEDED: Final = "superseded"
    FINAL: Final[frozenset[RecordState]] = frozenset({DONE, FAILED, SUPERSEDED})


def record_state(text: object) -> RecordState:
    """`text` as a record state; `ValueError` for anything else (a record no version of segflow wrote)."""
    if text not in get_args(RecordState):
        raise ValueError(f"{text!r} is not a record state")
    return cast(RecordState, text)


ClaimOutcome = Literal["acquired", "duplicate", "in_progress"]
"""What taking a record means for this delivery: go on, skip it, or let it be retried later."""


class ClaimOutcomes:
    ACQUIRED: Final = "acquired"
    DUPLICATE: Final = "duplicate"
    IN_PROGRESS: Final = "in_progress"


Outcome = Literal[
    "done",
    "submitted",
    "failed",
    "skipped",
    "duplicate",
    "retry",
    "fault",
    "waiting",
    "deferred",
    "superseded",
    "pending",
    "resubmitted",
    "gone",
    "errors",
]
"""How one record of an event (on_upload) or one claimed job (collect_jobs) ended."""


class Outcomes:
    DONE: Final = "done"
    SUBMITTED: Final = "submitted"
    FAILED: Final = "failed"
    SKIPPED: Final = "skipped"
    DUPLICATE: Final = "duplicate"
    RETRY: Final = "retry"
    """Retryable: the record is handed back and the event raised, so FC delivers it again."""
    FAULT: Final = "fault"
    """A deployment fault (keys, permissions, AppCode, product not activated): retryable once fixed."""
    WAITING: Final = "waiting"
    """Half of a RefineMask pair: it waits for the other half (recorded), nothing called yet."""
    DEFERRED: Final = "deferred"
    """Not started before the invocation's deadline: left to the redelivery (and the collector)."""
    SUPERSEDED: Final = "superseded"
    """The object was overwritten or deleted meanwhile: this version's result or failure is not written
    (the current version's own event decides the outcome); never redriven."""
    PENDING: Final = "pending"
    RESUBMITTED: Final = "resubmitted"
    GONE: Final = "gone"
    """Finished by someone else meanwhile: only the pending entry was cleaned up."""
    ERRORS: Final = "errors"
