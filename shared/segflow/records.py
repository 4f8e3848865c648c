"""Idempotency records: one per (bucket, key, ETag, action), on plain object storage.

OSS has no conditional update, so every decision two processes could race on is an immutable
put-if-absent, and a record is only overwritten by the process that won the matching one: `begin` creates
or judges a record (`ClaimOutcome`), a stuck one is taken over through `claims/<id>.<generation>` first,
and the owner moves it on (`mark_submitted`, `mark_done`, `mark_failed`, `mark_superseded`, `release`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, TypeAlias

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.layout import BucketLayout, ids_under
from segflow.states import ClaimOutcome, ClaimOutcomes, RecordState, RecordStates, record_state
from segflow.storage.base import Storage
from segflow.values import Value, as_dict, replace

Clock: TypeAlias = "Callable[[], float]"  # quoted: typing builds nothing at import
_EMPTY: Mapping[str, str] = MappingProxyType({})


def record_id_for(bucket: str, key: str, etag: str, action: str) -> str:
    """Stable id of one (bucket, key, ETag, action); hex so it is a safe key part. A duplicate delivery
    finds its record, a new version of the object gets its own. The action's parameters count too, without
    being in the id (records made before they counted are still found): see `params_changed`."""
    material = json.dumps([bucket, key, etag.strip('"').upper(), action], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


class Claim(Value):
    """Who holds a record, until when, and what it has cost so far: the part only `RecordStore` moves."""

    generation: int = 0
    """Which claim owns the record: 0 for the creator, n for the n-th takeover."""
    claimed_until: float = 0.0
    """A `submitting` record belongs to its owner until then; 0 once released after a retryable error."""
    attempts: int = 1
    """How many deliveries tried to submit it (the first included)."""
    calls: int = 0
    """Paid calls made (or begun) for it: written before each call, so a crash cannot hide one."""


class Payload(Value):
    """What the attempts learned: the job, the paid answer, the stored result, the error."""

    job_id: str | None = None
    request_id: str | None = None
    submitted_at: float | None = None
    resubmits: int = 0
    submit_key: str | None = None
    """The object actually given to the API when it is not the source (a fitted or converted copy)."""
    fit: Mapping[str, Any] | None = None
    outputs: tuple[str, ...] = ()
    """The stored result's keys; in a `submitting` record: stored, but marking it done failed."""
    error: Mapping[str, Any] | None = None
    answer: Mapping[str, Any] | None = None
    """A paid synchronous answer (its result URLs) not stored yet: a retried event stores it instead of
    calling again, until `answer_expires_at` (result URLs live 30 minutes)."""
    answer_expires_at: float | None = None


_MAPPINGS = ("params", "fit", "error", "answer")


class JobRecord(Value):
    """One source object (one version: its ETag) going through one action: what it is, the claim on it,
    and what its attempts learned. Stored flat, as one JSON object (every field at the top level)."""

    record_id: str
    bucket: str
    key: str
    etag: str
    action: str
    state: RecordState
    params: Mapping[str, str] = _EMPTY
    size: int | None = None
    region: str | None = None
    """The bucket's region, from the event (re-driving a stalled upload needs it)."""
    mask_key: str | None = None
    """RefineMask pairs: the coarse mask given with the image (the record's ETag is both ETags)."""
    created_at: float = 0.0
    updated_at: float = 0.0
    claim: Claim = Claim()
    payload: Payload = Payload()

    def with_claim(self, **changes: Any) -> JobRecord:
        return replace(self, claim=replace(self.claim, **changes))

    def with_payload(self, **changes: Any) -> JobRecord:
        return replace(self, payload=replace(self.payload, **changes))

    def to_json(self) -> bytes:
        data: dict[str, Any] = {**as_dict(self), **as_dict(self.claim), **as_dict(self.payload)}
        del data["claim"], data["payload"]
        for name in _MAPPINGS:
            value = data[name]
            data[name] = dict(value) if value is not None else None
        data["outputs"] = list(self.payload.outputs)
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobRecord:
        """A record as any version of segflow wrote it (the flat object is the format since the first)."""
        try:
            data = json.loads(raw)
            data["state"] = record_state(data["state"])
            data["params"] = {str(k): str(v) for k, v in (data.get("params") or {}).items()}
            data["outputs"] = tuple(data.get("outputs") or ())
            claim = Claim(**{k: data[k] for k in Claim._fields if k in data})
            payload = Payload(**{k: data[k] for k in Payload._fields if k in data})
            fields = {k: v for k, v in data.items() if k in cls._fields and k not in ("claim", "payload")}
            return cls(**fields, claim=claim, payload=payload)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StorageError(f"unreadable job record: {exc}", code="CorruptJobRecord") from exc


def params_changed(record: JobRecord, params: Mapping[str, str] | None) -> bool:
    """The action's parameters are part of what makes an upload the same (None: the caller does not say):
    a final record of other parameters is claimed again as new work."""
    return params is not None and dict(record.params) != {k: str(v) for k, v in params.items()}


class Taken(Value):
    """What `RecordStore.begin` decided for this delivery, and the record it decided on."""

    outcome: ClaimOutcome
    record: JobRecord


class RecordStore:
    """The idempotency records of one bucket."""

    def __init__(
        self,
        storage: Storage,
        layout: BucketLayout,
        *,
        clock: Clock = time.time,
        claim_seconds: float = 900.0,
        queued: Callable[[str], JobRecord | None] | None = None,
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.clock = clock
        self.claim_seconds = claim_seconds
        """How long a claim lasts when `begin` is not told (no known deadline: `Deps.hold_seconds`)."""
        self._queued = queued or (lambda record_id: None)

    def find(self, bucket: str, key: str, etag: str, action: str) -> JobRecord | None:
        """The record of one (bucket, key, ETag, action), if it has one."""
        return self.load(record_id_for(bucket, key, etag, action))

    def load(self, record_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(self.storage.get_bytes(self.layout.record_key(record_id)))
        except ObjectNotFoundError:
            return None

    def save(self, record: JobRecord) -> JobRecord:
        """Overwrite the record; only its owner (creator, takeover winner or lease holder) calls this."""
        record = replace(record, updated_at=self.clock())
        key = self.layout.record_key(record.record_id)
        self.storage.put_bytes(key, record.to_json(), content_type="application/json")
        return record

    # -- taking a record ------------------------------------------------------------------------------
    def begin(
        self,
        bucket: str,
        key: str,
        etag: str,
        action: str,
        params: Mapping[str, str] | None = None,
        *,
        size: int | None = None,
        region: str | None = None,
        mask_key: str | None = None,
        hold_seconds: float | None = None,
    ) -> Taken:
        """Create the record put-if-absent (`submitting`, with `inflight/<id>.json` so the collector can find
        an upload whose owner died), or decide what an existing one means for this delivery. The claim
        lasts `hold_seconds` (the invocation's remaining time and a margin: it must outlive its owner, or
        two owners could pay)."""
        now = self.clock()
        hold = self.claim_seconds if hold_seconds is None else hold_seconds
        fresh = JobRecord(
            record_id=record_id_for(bucket, key, etag, action),
            bucket=bucket,
            key=key,
            etag=etag,
            action=action,
            state=RecordStates.SUBMITTING,
            params=dict(params or {}),
            size=size,
            region=region,
            mask_key=mask_key,
            created_at=now,
            updated_at=now,
            claim=Claim(claimed_until=now + hold),
        )
        try:
            self.storage.put_bytes(
                self.layout.record_key(fresh.record_id),
                fresh.to_json(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return self._existing(fresh, params, hold)
        self._mark_inflight(fresh)
        return Taken(ClaimOutcomes.ACQUIRED, fresh)

    def _existing(self, fresh: JobRecord, params: Mapping[str, str] | None, hold: float) -> Taken:
        existing = self.load(fresh.record_id)
        if existing is None:  # deleted between our put and our read: someone is cleaning up, try later
            return Taken(ClaimOutcomes.IN_PROGRESS, fresh)
        if existing.state in RecordStates.FINAL and params_changed(existing, params):
            # The rule's parameters changed since: new work under the same id, claimed and paid anew.
            return self._take_over(existing, params or {}, fresh.region, hold, renew=Payload())
        if existing.state == RecordStates.SUPERSEDED:
            # The caller just found this version current again (the same content uploaded once more): what
            # was stored or queued for the earlier upload is not this one's, only a kept answer is.
            renew = replace(existing.payload, job_id=None, outputs=(), error=None)
            return self._take_over(existing, params or existing.params, fresh.region, hold, renew=renew)
        if existing.state != RecordStates.SUBMITTING:
            return Taken(ClaimOutcomes.DUPLICATE, existing)
        queued = self._queued(fresh.record_id)
        if queued is not None:
            # The owner submitted and queued the job but died before updating the record.
            return Taken(ClaimOutcomes.DUPLICATE, queued)
        if existing.claim.claimed_until > self.clock():
            return Taken(ClaimOutcomes.IN_PROGRESS, existing)
        return self._take_over(existing, params or existing.params, fresh.region, hold)

    def _take_over(
        self,
        existing: JobRecord,
        params: Mapping[str, str],
        region: str | None,
        hold: float,
        *,
        renew: Payload | None = None,
    ) -> Taken:
        """Claim `existing` under a new generation (put-if-absent, so one process wins). With `renew`, a
        final record becomes new work: its deliveries and paid calls count anew, with that payload (a kept
        answer is still used first: `services.paid.holds_answer`)."""
        now = self.clock()
        generation = existing.claim.generation + 1
        renewed = renew is not None
        attempts = 1 if renewed else existing.claim.attempts + 1
        calls = 0 if renewed else existing.claim.calls
        try:
            self.storage.put_bytes(
                self.layout.claim_key(existing.record_id, generation),
                json.dumps({"claimed_at": now}).encode(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return Taken(ClaimOutcomes.IN_PROGRESS, existing)
        taken = replace(
            existing,
            state=RecordStates.SUBMITTING,
            params=dict(params),
            region=existing.region or region,
            claim=Claim(generation, now + hold, attempts, calls),
        )
        if renew is not None:
            taken = replace(taken, payload=renew)
        self._mark_inflight(taken)
        marker = {
            RecordStates.SUPERSEDED: self.layout.superseded_key,
            RecordStates.DONE: self.layout.done_key,
        }
        if existing.state in marker:  # no longer superseded, or not done with these parameters
            with contextlib.suppress(StorageError):
                self.storage.delete(marker[existing.state](existing.record_id))
        return Taken(ClaimOutcomes.ACQUIRED, self.save(taken))

    def release(self, record: JobRecord) -> JobRecord:
        """Give a `submitting` record up after a retryable failure so the retried event takes it at once."""
        return self.save(record.with_claim(claimed_until=0.0))

    # -- moving it on ---------------------------------------------------------------------------------
    def note_call(self, record: JobRecord) -> JobRecord:
        """Count a paid call before making it: whatever fails after the call, the record knows of it."""
        return self.save(record.with_claim(calls=record.claim.calls + 1))

    def mark_submitted(self, record: JobRecord, *, job_id: str, request_id: str | None) -> JobRecord:
        """The record of a queued asynchronous job (queue it first: see `jobqueue.queue_job`)."""
        submitted = replace(record, state=RecordStates.SUBMITTED).with_payload(
            job_id=job_id, request_id=request_id, submitted_at=record.payload.submitted_at or self.clock()
        )
        saved = self.save(submitted)
        self._clear_inflight(record.record_id)
        return saved

    def mark_done(self, record: JobRecord, *, outputs: tuple[str, ...], request_id: str | None) -> JobRecord:
        done = replace(record, state=RecordStates.DONE).with_payload(
            outputs=outputs,
            request_id=request_id or record.payload.request_id,
            answer=None,
            answer_expires_at=None,
        )
        saved = self.save(done)
        self._clear_inflight(record.record_id)
        # The marker `segflow status` counts: best effort, the record itself is what counts.
        with contextlib.suppress(StorageError):
            self.storage.put_bytes(self.layout.done_key(record.record_id), b"")
        return saved

    def mark_superseded(self, record: JobRecord) -> JobRecord:
        """The object changed (or went) before this version's outcome could be published: final, and
        counted apart (`<jobs>/state/superseded/<id>`). The answer stays: the same content uploaded again
        is this version again (`begin` takes the record back) and can be stored without a call."""
        saved = self.save(replace(record, state=RecordStates.SUPERSEDED))
        self._clear_inflight(record.record_id)
        with contextlib.suppress(StorageError):
            self.storage.put_bytes(self.layout.superseded_key(record.record_id), b"")
            if record.state == RecordStates.DONE:  # its result was replaced: it no longer counts as done
                self.storage.delete(self.layout.done_key(record.record_id))
        return saved

    def reopen(self, record_id: str) -> JobRecord | None:
        """Hand a `failed` record back for one more try (a redrive after the cause was fixed): it becomes
        `submitting` and unclaimed, its paid-call count starts over (an operator asked). None when it is
        done or superseded, missing, or another redrive reopened it first (the claim is put-if-absent)."""
        record = self.load(record_id)
        if record is None or record.state in (RecordStates.DONE, RecordStates.SUPERSEDED):
            return None
        if record.state != RecordStates.FAILED:
            return record  # submitting (a deployment fault left it retryable) or submitted: nothing to undo
        generation = record.claim.generation + 1
        try:
            self.storage.put_bytes(
                self.layout.claim_key(record_id, generation),
                json.dumps({"reopened_at": self.clock()}).encode(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return None
        reopened = replace(
            record, state=RecordStates.SUBMITTING, claim=Claim(generation=generation, attempts=0, calls=0)
        )
        self._mark_inflight(reopened)
        return self.save(reopened)

    def mark_failed(self, record: JobRecord, error: Mapping[str, Any]) -> JobRecord:
        saved = self.save(replace(record, state=RecordStates.FAILED).with_payload(error=dict(error)))
        self._clear_inflight(record.record_id)
        return saved

    # -- uploads in flight ----------------------------------------------------------------------------
    def _mark_inflight(self, record: JobRecord) -> None:
        body = json.dumps({"record_id": record.record_id, "key": record.key}, ensure_ascii=False)
        self.storage.put_bytes(
            self.layout.inflight_key(record.record_id), body.encode("utf-8"), content_type="application/json"
        )

    def _clear_inflight(self, record_id: str) -> None:
        """Best effort: the record's state is what counts, and `stalled()` drops a leftover mark."""
        with contextlib.suppress(StorageError):
            self.storage.delete(self.layout.inflight_key(record_id))

    def list_inflight(self, *, page_size: int = 1000) -> Iterator[str]:
        """Record ids of uploads still in `submitting` (or whose owner died before clearing the mark)."""
        return ids_under(self.storage, self.layout.inflight_prefix, page_size=page_size)

    def stalled(self, record_id: str, *, quiet_seconds: float) -> JobRecord | None:
        """The record if it is stuck in `submitting`: unclaimed (expired or released) and untouched for
        `quiet_seconds`; clears the mark of a record that is no longer submitting."""
        record = self.load(record_id)
        if record is None or record.state != RecordStates.SUBMITTING:
            self.storage.delete(self.layout.inflight_key(record_id))
            return None
        now = self.clock()
        if record.claim.claimed_until > now or record.updated_at + quiet_seconds > now:
            return None
        return record
