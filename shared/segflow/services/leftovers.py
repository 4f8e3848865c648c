"""Uploads on_upload left behind, taken up by the collector through on_upload's own steps.

    redrive_stalled    a record stuck in `submitting` (its owner died after FC stopped retrying the event)
    process_deferred   an event record an invocation had no time for
    expire_waiting     a RefineMask half whose other half never came: one failure record naming it

Each builds the event FC would have delivered and runs `services.upload.process_record`, so the claim
takeover, the attempt count and the failure record after the last attempt all apply.
"""

from __future__ import annotations

import json
import time
from typing import Any

from segflow.deadline import Deadline
from segflow.errors import InputValidationError, SegflowError
from segflow.events import OssRecord, object_created_event
from segflow.logs import log_outcome
from segflow.outputs import iso_time
from segflow.records import JobRecord
from segflow.services.common import failure_record
from segflow.services.deps import Deps
from segflow.services.pairs import MISSING_CODE
from segflow.services.publish import Publisher, Version
from segflow.services.stages import RecordOutcome
from segflow.services.upload import RAISED, process_record
from segflow.states import Outcome, Outcomes, RecordStates
from segflow.storage.base import Storage

_SETTLED = frozenset(
    {Outcomes.DONE, Outcomes.SUBMITTED, Outcomes.FAILED, Outcomes.DUPLICATE, Outcomes.WAITING}
)


def process_deferred(
    deps: Deps, bucket: str, marker_id: str, deadline: Deadline, *, quiet_seconds: float = 0.0
) -> Outcome | None:
    """Process one deferred record once it has waited `quiet_seconds` (FC's redelivery gets them to come
    first); the marker is dropped once the record's outcome is final. None when the marker is too young,
    gone or unreadable."""
    storage = deps.storage_for(bucket)
    key = deps.layout.deferred_key(marker_id)
    try:
        marker = json.loads(storage.get_bytes(key))
        raw = marker["record"]
        if float(marker.get("deferred_at", 0.0)) + quiet_seconds > deps.clock():
            return None
    except (SegflowError, ValueError, KeyError, TypeError):
        return None
    outcome = process_record(OssRecord(raw, 0), deps, deadline)
    log_outcome(deps.logger, outcome.level, **outcome.fields(), deferred=True)
    if outcome.outcome not in RAISED:
        storage.delete(key)
    return outcome.outcome


def redrive_stalled(deps: Deps, job: JobRecord, deadline: Deadline) -> Outcome:
    """Process again an upload whose record is stuck in `submitting`: the object as it is now goes through
    on_upload's steps (a redelivered event). If it is no longer the record's version, the stalled record
    ends superseded (the new version's own record decides the outcome). Returns the outcome."""
    storage = deps.storage_for(job.bucket, job.region)
    current = Publisher(deps, storage, deadline).is_current(Version.of(job))
    region = job.region or deps.settings.region
    event = object_created_event(
        job.bucket,
        job.key,
        etag=job.etag,
        size=job.size or 0,
        region=region,
        event_name="ObjectCreated:Redrive",
        event_time=iso_time(deps.clock()),
        rule_id="segflow-collect-jobs",
    )
    t0 = time.monotonic()
    outcome = process_record(OssRecord(event["events"][0], 0), deps, deadline)
    log_outcome(
        deps.logger, outcome.level, **outcome.fields(), redriven=True, ms=(time.monotonic() - t0) * 1000.0
    )
    if not current:
        return _supersede_stalled(deps, job, outcome)
    _settle_rerouted(deps, job, outcome)
    return outcome.outcome


def _supersede_stalled(deps: Deps, job: JobRecord, outcome: RecordOutcome) -> Outcome:
    records = deps.records(deps.storage_for(job.bucket, job.region))
    stalled = records.load(job.record_id)
    if stalled is not None and stalled.state == RecordStates.SUBMITTING:
        records.mark_superseded(stalled)
        log_outcome(
            deps.logger, outcome.level, bucket=job.bucket, key=job.key, action=job.action,
            outcome=Outcomes.SUPERSEDED, redriven=True, record_id=job.record_id,
        )  # fmt: skip
        return Outcomes.SUPERSEDED
    return outcome.outcome


def _settle_rerouted(deps: Deps, job: JobRecord, outcome: RecordOutcome) -> None:
    """The object now goes to another action (a rule was changed since, and a redrive reopened the old
    record): its new action's record has it, so the old one is closed, or every tick would send it again."""
    if outcome.action in (None, job.action) or outcome.outcome not in _SETTLED:
        return
    records = deps.records(deps.storage_for(job.bucket, job.region))
    current = records.load(job.record_id)
    if current is not None and current.state == RecordStates.SUBMITTING:
        message = f"superseded: the object now goes to {outcome.action}"
        records.mark_failed(current, {"Code": "RouteChanged", "Message": message})


def expire_waiting(deps: Deps, storage: Storage, marker_key: str, deadline: Deadline) -> Outcome | None:
    """A half still waiting past its pair's timeout: processed again if the other half has arrived since
    (its event was lost), else one failure record of the half that came, naming the missing one (unless
    that half changed meanwhile)."""
    try:
        waiting: dict[str, Any] = json.loads(storage.get_bytes(marker_key))
        present, since, timeout = waiting["Present"], float(waiting["Since"]), float(waiting["Timeout"])
    except (SegflowError, ValueError, KeyError, TypeError):
        return None
    if deps.clock() < since + timeout:
        return None
    region = str(waiting.get("Region") or deps.settings.region)
    event = object_created_event(
        storage.bucket, present["Key"], etag=present["ETag"], size=int(present["Size"]), region=region
    )
    outcome = process_record(OssRecord(event["events"][0], 0), deps, deadline)
    if outcome.outcome != Outcomes.WAITING:
        return outcome.outcome  # the pair is complete now (or the file is gone)
    role = "mask" if waiting.get("Role") == "image" else "image"
    error = InputValidationError(
        f"RefineMask needs the {role} of {present['Key']}; {waiting.get('Missing')} did not arrive within "
        f"{timeout:.0f} s",
        code=MISSING_CODE,
    )
    version = Version(str(present["Key"]), str(present["ETag"]))
    document = failure_record(deps, storage.bucket, version, action="RefineMask", error=error)
    written = Publisher(deps, storage, deadline).failure(version, document)
    storage.delete(marker_key)
    return Outcomes.FAILED if written is not None else Outcomes.SUPERSEDED
