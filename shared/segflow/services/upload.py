"""on_upload: every record of an OSS event ends as a result, a queued job, a failure record or a skip.

Each record goes through `services.locate`, `services.pairs` and the paid call's owner (`services.paid`),
on its own (`failure_policy.isolated`): one record never hides the others. What a retry can fix is raised
after every record had its go, so FC delivers the event again and the finished records are duplicates;
records left when the deadline is near (`Deps.record_seconds`) are deferred. The whole walk:
shared/ARCHITECTURE.md, "An upload".
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

from segflow.deadline import Deadline
from segflow.errors import DeadlineError, EventError, SegflowError
from segflow.events import OssEvent, OssRecord
from segflow.failure_policy import isolated
from segflow.logs import log_outcome, utf8_text
from segflow.services.common import safe_message
from segflow.services.deps import Deps
from segflow.services.locate import identify, locate
from segflow.services.paid import pay, refuse
from segflow.services.publish import Publisher
from segflow.services.stages import RecordOutcome, Refusal
from segflow.states import Outcomes
from segflow.values import replace

_COUNTED = (
    Outcomes.DONE,
    Outcomes.SUBMITTED,
    Outcomes.FAILED,
    Outcomes.SKIPPED,
    Outcomes.DUPLICATE,
    Outcomes.RETRY,
    Outcomes.FAULT,
    Outcomes.DEFERRED,
    Outcomes.WAITING,
    Outcomes.SUPERSEDED,
)
RAISED = frozenset({Outcomes.RETRY, Outcomes.FAULT, Outcomes.DEFERRED})


class UploadSummary:
    """What one invocation did; returned by the handler (FC logs it) and asserted on by tests."""

    __slots__ = ("counts", "outcomes", "records", "seconds")

    def __init__(self, records: int = 0) -> None:
        self.records = records
        self.counts: dict[str, int] = dict.fromkeys(_COUNTED, 0)
        self.outcomes: list[dict[str, Any]] = []
        self.seconds = 0.0

    def add(self, outcome: RecordOutcome) -> None:
        self.counts[outcome.outcome] += 1
        self.outcomes.append(outcome.fields())

    def __getattr__(self, name: str) -> int:
        try:
            return self.counts[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        counted = dict(self.counts)
        return {
            "records": self.records,
            **counted,
            "seconds": round(self.seconds, 3),
            "outcomes": list(self.outcomes),
        }

    def to_json(self) -> str:
        """What the handler returns: FC passes a string back as the response body unchanged."""
        return utf8_text(json.dumps(self.to_dict(), ensure_ascii=False))


def process_upload_event(
    event: OssEvent | bytes | str | Mapping[str, Any], deps: Deps, deadline: Deadline | None = None
) -> UploadSummary:
    """Process every record; raise the first retryable error at the end, after all records had their go."""
    started = time.monotonic()
    deadline = deadline or Deadline.none()
    try:
        parsed = event if isinstance(event, OssEvent) else OssEvent.from_payload(event)
    except EventError as error:
        # No retry can fix a payload that is not an OSS event: say so once and return.
        summary = UploadSummary()
        unparsable = RecordOutcome(Outcomes.SKIPPED, code=error.code, detail=error.message)
        log_outcome(deps.logger, logging.WARNING, **unparsable.fields(), ms=0.0)
        summary.add(unparsable)
        summary.seconds = time.monotonic() - started
        return summary
    summary = UploadSummary(records=len(parsed))
    raised: list[SegflowError] = []
    for record in parsed:
        t0 = time.monotonic()
        if deadline.has(deps.record_seconds):
            outcome = isolated(
                partial(process_record, record, deps, deadline),
                partial(_unexpected, record),
                logger=deps.logger,
                what=f"record {record.index} of the event",
            )
        else:
            outcome = defer(record, deps)
        log_outcome(deps.logger, outcome.level, **outcome.fields(), ms=(time.monotonic() - t0) * 1000.0)
        summary.add(outcome)
        if outcome.outcome in RAISED and outcome.error is not None:
            raised.append(outcome.error)
    summary.seconds = time.monotonic() - started
    if raised:
        deps.logger.warning(
            "%d of %d records are to be tried again; raising so the event is delivered again",
            len(raised),
            summary.records,
        )
        raise _safe_to_raise(deps, raised[0]) from None
    return summary


def _safe_to_raise(deps: Deps, error: SegflowError) -> SegflowError:
    """The error FC reports for the invocation (its message and traceback go to FC's logs): the same kind
    and code, with the message made safe (a refused signature's message echoes the STS token) and nothing
    chained to it."""
    message = safe_message(deps, error)
    try:
        return type(error)(
            message,
            code=error.code,
            http_status=error.http_status,
            request_id=error.request_id,
            host_id=error.host_id,
        )
    except TypeError:  # an error class with a constructor of its own
        return SegflowError(
            message, code=error.code, http_status=error.http_status, request_id=error.request_id
        )


def process_record(record: OssRecord, deps: Deps, deadline: Deadline | None = None) -> RecordOutcome:
    """One record: which object, what it is, its pair, then its paid call's owner (`services.paid`)."""
    deadline = deadline or Deadline.none()
    located = locate(record, deps)
    if isinstance(located, RecordOutcome):
        return located
    try:
        identified = identify(located, deps)
    except SegflowError as error:  # the probe's reads
        identified = Refusal(located, error, None)
    if isinstance(identified, Refusal):
        return refuse(deps, Publisher(deps, located.storage, deadline), identified)
    if identified.route.pair is None:
        return pay(identified, deps, deadline)
    # Only a RefineMask pair rule pairs (the rare case): an instance without one never loads it.
    from segflow.services.pairs import pair

    try:
        paired = pair(identified, deps)
    except SegflowError as error:  # finding the other half, or writing down that this one waits
        paired = Refusal(located, error, identified.action.name)
    if isinstance(paired, Refusal):
        return refuse(deps, Publisher(deps, located.storage, deadline), paired)
    if isinstance(paired, RecordOutcome):
        return paired
    return pay(paired, deps, deadline)


def _unexpected(record: OssRecord, exc: Exception) -> RecordOutcome:
    unexpected = SegflowError(f"unexpected {type(exc).__name__}: {exc}", code="InternalError")
    unexpected.__cause__ = exc
    bucket, key = record.readable_location()
    return RecordOutcome(Outcomes.RETRY, bucket, key, code=unexpected.code, error=unexpected)


# -- records left for later -----------------------------------------------------------------------------


def deferred_id(raw: Any) -> str:
    """A stable name for one event record (the same record deferred twice is one marker)."""
    material = json.dumps(raw, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def defer(record: OssRecord, deps: Deps) -> RecordOutcome:
    """Not started: too little of the invocation is left. The record is written down under
    `<jobs>/deferred/` (the collector processes what no redelivery did) and the event is raised."""
    error = DeadlineError("not started: the invocation is about to reach its timeout")
    bucket, key = record.readable_location()
    outcome = RecordOutcome(Outcomes.DEFERRED, bucket, key, code=error.code, error=error)
    if outcome.bucket is None:
        return replace(outcome, outcome=Outcomes.SKIPPED, error=None, detail="no bucket to defer it in")
    try:
        storage = deps.storage_for(outcome.bucket)
        # ASCII JSON: a malformed record's lone surrogates stay escapes, and read back as they came.
        body = json.dumps({"record": record.raw, "deferred_at": deps.clock()}).encode("ascii")
        storage.put_bytes(
            deps.layout.deferred_key(deferred_id(record.raw)), body, content_type="application/json"
        )
    except SegflowError as storing:
        deps.logger.warning(
            "record %d could not be deferred (%s): only FC's redelivery has it", record.index, storing.code
        )
    return outcome
