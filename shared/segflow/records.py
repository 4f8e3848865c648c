"""Idempotency records: one per (bucket, key, ETag, action), on plain object storage.

OSS can create an object only if it is absent (`x-oss-forbid-overwrite`) but has no conditional update, so
every decision two processes could race on is an *immutable* put-if-absent, and a record is only ever
overwritten by the process that won the matching put-if-absent:

- `begin` creates `records/<id>.json` put-if-absent (`submitting`); a duplicate delivery finds it and
  learns what to do (`ClaimOutcome`); a record stuck in `submitting` past its claim (its owner died, or
  released it after a retryable error) is taken over by creating `claims/<id>.<generation>` first.
- `inflight/<id>.json` marks a record in `submitting`, so the collector can find (and re-drive) an upload
  whose owner died after FC had stopped retrying its event.
- the owner moves it on: `mark_submitted`, `mark_done`, `mark_failed` (and `release` to hand it back).

The id is a hash of bucket, key, ETag and action, so a duplicate delivery of the same upload finds the
record its first delivery made, and a new version of the object (new ETag) is processed again. The
action's parameters count too, without being part of the id (records made before they counted are still
found): a final record of other parameters is claimed again, as new work (`_redo`).
"""

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.layout import BucketLayout, ids_under
from segflow.states import ClaimOutcome, RecordState
from segflow.storage.base import Storage

Clock = Callable[[], float]
_EMPTY: Mapping[str, str] = MappingProxyType({})


def record_id_for(bucket: str, key: str, etag: str, action: str) -> str:
    """Stable id of one (bucket, key, ETag, action); hex so it is a safe key part."""
    material = json.dumps([bucket, key, etag.strip('"').upper(), action], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


class JobRecord(NamedTuple):
    """Everything known about one source object going through one action.

    A NamedTuple (immutable, compared by value) rather than a dataclass: building a 25-field dataclass
    costs the handlers' cold start about 2 ms."""

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
    generation: int = 0
    """Which claim owns the record: 0 for the creator, n for the n-th takeover."""
    claimed_until: float = 0.0
    """A `submitting` record belongs to its owner until then; 0 once released after a retryable error."""
    attempts: int = 1
    """How many deliveries tried to submit it (the first included)."""
    calls: int = 0
    """Paid calls made (or begun) for it: written before each call, so a crash cannot hide one."""
    created_at: float = 0.0
    updated_at: float = 0.0
    job_id: str | None = None
    request_id: str | None = None
    submitted_at: float | None = None
    resubmits: int = 0
    submit_key: str | None = None
    """The object actually given to the API when it is not the source (a fitted or converted copy)."""
    mask_key: str | None = None
    """RefineMask pairs: the coarse mask given with the image (the record's ETag is both ETags)."""
    fit: Mapping[str, Any] | None = None
    outputs: tuple[str, ...] = ()
    """The stored result's keys; in a `submitting` record: stored, but marking it done failed."""
    error: Mapping[str, Any] | None = None
    answer: Mapping[str, Any] | None = None
    """A paid synchronous answer (its result URLs) not stored yet: a retried event stores it instead of
    calling again, until `answer_expires_at` (result URLs live 30 minutes)."""
    answer_expires_at: float | None = None

    def evolve(self, **changes: Any) -> "JobRecord":
        return self._replace(**changes)

    def to_json(self) -> bytes:
        data = self._asdict()
        data["state"] = RecordState(self.state).value
        for name in ("params", "fit", "error", "answer"):
            value = data[name]
            data[name] = dict(value) if value is not None else None
        data["outputs"] = list(self.outputs)
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> "JobRecord":
        try:
            data = json.loads(raw)
            data["state"] = RecordState(data["state"])
            data["params"] = {str(k): str(v) for k, v in (data.get("params") or {}).items()}
            data["outputs"] = tuple(data.get("outputs") or ())
            return cls(**{k: v for k, v in data.items() if k in cls._fields})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StorageError(f"unreadable job record: {exc}", code="CorruptJobRecord") from exc


def params_changed(record: JobRecord, params: Mapping[str, str] | None) -> bool:
    """The action's parameters are part of what makes an upload the same (None: the caller does not say)."""
    return params is not None and dict(record.params) != {k: str(v) for k, v in params.items()}


class Claim(NamedTuple):
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
        # Must outlive the function's timeout: a record is taken over only when its owner is surely gone.
        self.claim_seconds = claim_seconds
        self._queued = queued or (lambda record_id: None)

    def load(self, record_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(self.storage.get_bytes(self.layout.record_key(record_id)))
        except ObjectNotFoundError:
            return None

    def save(self, record: JobRecord) -> JobRecord:
        """Overwrite the record; only its owner (creator, takeover winner or lease holder) calls this."""
        record = record.evolve(updated_at=self.clock())
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
    ) -> Claim:
        """Create the record put-if-absent, or decide what an existing one means for this delivery."""
        now = self.clock()
        fresh = JobRecord(
            record_id=record_id_for(bucket, key, etag, action),
            bucket=bucket,
            key=key,
            etag=etag,
            action=action,
            state=RecordState.SUBMITTING,
            params=dict(params or {}),
            size=size,
            region=region,
            mask_key=mask_key,
            claimed_until=now + self.claim_seconds,
            created_at=now,
            updated_at=now,
        )
        try:
            self.storage.put_bytes(
                self.layout.record_key(fresh.record_id),
                fresh.to_json(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return self._existing(fresh, params)
        self._mark_inflight(fresh)
        return Claim(ClaimOutcome.ACQUIRED, fresh)

    def _existing(self, fresh: JobRecord, params: Mapping[str, str] | None) -> Claim:
        existing = self.load(fresh.record_id)
        if existing is None:  # deleted between our put and our read: someone is cleaning up, try later
            return Claim(ClaimOutcome.IN_PROGRESS, fresh)
        if existing.state in (RecordState.DONE, RecordState.FAILED) and params_changed(existing, params):
            return self._redo(existing, fresh)
        if existing.state != RecordState.SUBMITTING:
            return Claim(ClaimOutcome.DUPLICATE, existing)
        queued = self._queued(fresh.record_id)
        if queued is not None:
            # The owner submitted and queued the job but died before updating the record.
            return Claim(ClaimOutcome.DUPLICATE, queued)
        if existing.claimed_until > self.clock():
            return Claim(ClaimOutcome.IN_PROGRESS, existing)
        return self._take_over(existing, params or existing.params, fresh.region)

    def _take_over(self, existing: JobRecord, params: Mapping[str, str], region: str | None) -> Claim:
        now = self.clock()
        generation = existing.generation + 1
        try:
            self.storage.put_bytes(
                self.layout.claim_key(existing.record_id, generation),
                json.dumps({"claimed_at": now}).encode(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return Claim(ClaimOutcome.IN_PROGRESS, existing)
        taken = existing.evolve(
            generation=generation,
            claimed_until=now + self.claim_seconds,
            attempts=existing.attempts + 1,
            params=dict(params),
            region=existing.region or region,
        )
        self._mark_inflight(taken)
        return Claim(ClaimOutcome.ACQUIRED, self.save(taken))

    def _redo(self, existing: JobRecord, fresh: JobRecord) -> Claim:
        """A final record of other parameters (the rule changed since): new work, claimed and paid anew
        under the same id, so records made before parameters counted are still found."""
        generation = existing.generation + 1
        try:
            self.storage.put_bytes(
                self.layout.claim_key(existing.record_id, generation),
                json.dumps({"claimed_at": fresh.created_at, "params_changed": True}).encode(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return Claim(ClaimOutcome.IN_PROGRESS, existing)
        redone = fresh.evolve(generation=generation, created_at=existing.created_at)
        self._mark_inflight(redone)
        with contextlib.suppress(StorageError):
            self.storage.delete(self.layout.done_key(existing.record_id))  # not done with these parameters
        return Claim(ClaimOutcome.ACQUIRED, self.save(redone))

    def release(self, record: JobRecord) -> JobRecord:
        """Give a `submitting` record up after a retryable failure so the retried event takes it at once."""
        return self.save(record.evolve(claimed_until=0.0))

    # -- moving it on ---------------------------------------------------------------------------------
    def note_call(self, record: JobRecord) -> JobRecord:
        """Count a paid call before making it: whatever fails after the call, the record knows of it."""
        return self.save(record.evolve(calls=record.calls + 1))

    def mark_submitted(self, record: JobRecord, *, job_id: str, request_id: str | None) -> JobRecord:
        """The record of a queued asynchronous job (queue it first: see `jobqueue.queue_job`)."""
        submitted = record.evolve(
            state=RecordState.SUBMITTED,
            job_id=job_id,
            request_id=request_id,
            submitted_at=record.submitted_at or self.clock(),
        )
        saved = self.save(submitted)
        self._clear_inflight(record.record_id)
        return saved

    def mark_done(self, record: JobRecord, *, outputs: tuple[str, ...], request_id: str | None) -> JobRecord:
        done = record.evolve(
            state=RecordState.DONE,
            outputs=outputs,
            request_id=request_id or record.request_id,
            answer=None,
            answer_expires_at=None,
        )
        saved = self.save(done)
        self._clear_inflight(record.record_id)
        # The marker `segflow status` counts: best effort, the record itself is what counts.
        with contextlib.suppress(StorageError):
            self.storage.put_bytes(self.layout.done_key(record.record_id), b"")
        return saved

    def reopen(self, record_id: str) -> JobRecord | None:
        """Hand a `failed` record back for one more try (a redrive after the cause was fixed): it becomes
        `submitting` and unclaimed, its paid-call count starts over (an operator asked). None when it is
        done, missing, or another redrive reopened it first (the claim is put-if-absent)."""
        record = self.load(record_id)
        if record is None or record.state == RecordState.DONE:
            return None
        if record.state != RecordState.FAILED:
            return record  # submitting (a deployment fault left it retryable) or submitted: nothing to undo
        generation = record.generation + 1
        try:
            self.storage.put_bytes(
                self.layout.claim_key(record_id, generation),
                json.dumps({"reopened_at": self.clock()}).encode(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return None
        reopened = record.evolve(
            state=RecordState.SUBMITTING, generation=generation, claimed_until=0.0, attempts=0, calls=0
        )
        self._mark_inflight(reopened)
        return self.save(reopened)

    def mark_failed(self, record: JobRecord, error: Mapping[str, Any]) -> JobRecord:
        saved = self.save(record.evolve(state=RecordState.FAILED, error=dict(error)))
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
        if record is None or record.state != RecordState.SUBMITTING:
            self.storage.delete(self.layout.inflight_key(record_id))
            return None
        now = self.clock()
        if record.claimed_until > now or record.updated_at + quiet_seconds > now:
            return None
        return record
