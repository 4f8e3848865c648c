"""Job records: idempotency for uploads and the queue of asynchronous jobs, on plain object storage.

OSS can create an object only if it is absent (`x-oss-forbid-overwrite`) but has no conditional update, so
every decision that two processes could race on is an *immutable* put-if-absent, and a mutable object is
only ever overwritten by the process that won the matching put-if-absent. Layout under the jobs prefix:

    records/<id>.json            the record of one (bucket, key, ETag, action); created put-if-absent, then
                                 overwritten by its owner: submitting -> submitted -> done | failed
    claims/<id>.<generation>     put-if-absent marker of a takeover of a record stuck in `submitting`
                                 (its owner crashed or released it after a retryable error)
    pending/<id>.json            the job record of an asynchronous job still to collect; deleted when it
                                 is finished, so a collector tick lists only what is still pending
    inflight/<id>.json           marks a record in `submitting`; deleted when it is submitted, done or
                                 failed, so the collector can find (and re-drive) an upload whose owner
                                 died after FC had stopped retrying its event
    leases/<id>.<generation>     a collector's lease on one pending job; generation n+1 may only be created
                                 once generation n has expired or been released by its owner

`<id>` is a hash of bucket, key, ETag and action, so a duplicate delivery of the same upload finds the
record its first delivery made, and a new version of the object (new ETag) is processed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.storage.base import Storage

SUBMITTING = "submitting"
SUBMITTED = "submitted"
DONE = "done"
FAILED = "failed"
STATES = frozenset({SUBMITTING, SUBMITTED, DONE, FAILED})
FINAL_STATES = frozenset({DONE, FAILED})

ACQUIRED = "acquired"
DUPLICATE = "duplicate"
IN_PROGRESS = "in_progress"

Clock = Callable[[], float]


def as_prefix(prefix: str) -> str:
    """`prefix` ending in exactly one `/` (empty stays empty)."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def record_id_for(bucket: str, key: str, etag: str, action: str) -> str:
    """Stable id of one (bucket, key, ETag, action); hex so it is a safe key part."""
    material = json.dumps([bucket, key, etag.strip('"').upper(), action], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


@dataclass(frozen=True)
class JobRecord:
    """Everything known about one source object going through one action."""

    record_id: str
    bucket: str
    key: str
    etag: str
    action: str
    state: str
    params: Mapping[str, str] = field(default_factory=dict)
    size: int | None = None
    region: str | None = None
    """The bucket's region, from the event (re-driving a stalled upload needs it)."""
    generation: int = 0
    """Which claim owns the record: 0 for the creator, n for the n-th takeover."""
    claimed_until: float = 0.0
    """A `submitting` record belongs to its owner until then; 0 once released after a retryable error."""
    attempts: int = 1
    """How many event deliveries tried to submit it (the first included)."""
    created_at: float = 0.0
    updated_at: float = 0.0
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

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"unknown job record state {self.state!r}")

    def evolve(self, **changes: Any) -> JobRecord:
        return replace(self, **changes)

    def to_json(self) -> bytes:
        data = asdict(self)
        data["params"] = dict(self.params)
        data["outputs"] = list(self.outputs)
        data["fit"] = dict(self.fit) if self.fit is not None else None
        data["error"] = dict(self.error) if self.error is not None else None
        data["answer"] = dict(self.answer) if self.answer is not None else None
        return json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> JobRecord:
        try:
            data = json.loads(raw)
            data["params"] = {str(k): str(v) for k, v in (data.get("params") or {}).items()}
            data["outputs"] = tuple(data.get("outputs") or ())
            known = set(cls.__dataclass_fields__)
            return cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StorageError(f"unreadable job record: {exc}", code="CorruptJobRecord") from exc


@dataclass(frozen=True)
class Claim:
    """What `JobStore.begin` decided: `acquired` (go on), `duplicate` (already handled: skip) or
    `in_progress` (someone else owns it right now: let the event be retried later)."""

    outcome: str
    record: JobRecord


@dataclass(frozen=True)
class Lease:
    """A collector's hold on one pending job until `expires_at`."""

    record_id: str
    generation: int
    owner: str
    expires_at: float
    key: str


class JobStore:
    """Records, pending jobs and leases of one bucket, under the jobs prefix."""

    def __init__(
        self,
        storage: Storage,
        jobs_prefix: str,
        *,
        clock: Clock = time.time,
        claim_seconds: float = 900.0,
        lease_seconds: float = 300.0,
    ) -> None:
        self.storage = storage
        self.prefix = as_prefix(jobs_prefix)
        self.clock = clock
        # Must outlive the function's timeout: a record is taken over only when its owner is surely gone.
        self.claim_seconds = claim_seconds
        self.lease_seconds = lease_seconds

    # -- keys ---------------------------------------------------------------------------------
    def record_key(self, record_id: str) -> str:
        return f"{self.prefix}records/{record_id}.json"

    def claim_key(self, record_id: str, generation: int) -> str:
        return f"{self.prefix}claims/{record_id}.{generation:08d}"

    def pending_prefix(self) -> str:
        return f"{self.prefix}pending/"

    def pending_key(self, record_id: str) -> str:
        return f"{self.pending_prefix()}{record_id}.json"

    def inflight_prefix(self) -> str:
        return f"{self.prefix}inflight/"

    def inflight_key(self, record_id: str) -> str:
        return f"{self.inflight_prefix()}{record_id}.json"

    def lease_prefix(self, record_id: str) -> str:
        return f"{self.prefix}leases/{record_id}."

    # -- records ------------------------------------------------------------------------------
    def load(self, record_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(self.storage.get_bytes(self.record_key(record_id)))
        except ObjectNotFoundError:
            return None

    def save(self, record: JobRecord) -> JobRecord:
        """Overwrite the record; only its owner (creator, takeover winner or lease holder) calls this."""
        record = record.evolve(updated_at=self.clock())
        self.storage.put_bytes(
            self.record_key(record.record_id), record.to_json(), content_type="application/json"
        )
        return record

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
    ) -> Claim:
        """Create the record put-if-absent, or decide what an existing one means for this delivery."""
        now = self.clock()
        record_id = record_id_for(bucket, key, etag, action)
        fresh = JobRecord(
            record_id=record_id,
            bucket=bucket,
            key=key,
            etag=etag,
            action=action,
            state=SUBMITTING,
            params=dict(params or {}),
            size=size,
            region=region,
            claimed_until=now + self.claim_seconds,
            created_at=now,
            updated_at=now,
        )
        try:
            self.storage.put_bytes(
                self.record_key(record_id), fresh.to_json(), content_type="application/json", if_absent=True
            )
            self._mark_inflight(fresh)
            return Claim(ACQUIRED, fresh)
        except ObjectExistsError:
            pass
        existing = self.load(record_id)
        if existing is None:  # deleted between our put and our read: someone is cleaning up, try later
            return Claim(IN_PROGRESS, fresh)
        if existing.state != SUBMITTING:
            return Claim(DUPLICATE, existing)
        pending = self.load_pending(record_id)
        if pending is not None:
            # The owner submitted and wrote the pending job but died before updating the record.
            return Claim(DUPLICATE, pending)
        if existing.claimed_until > now:
            return Claim(IN_PROGRESS, existing)
        generation = existing.generation + 1
        try:
            self.storage.put_bytes(
                self.claim_key(record_id, generation),
                json.dumps({"claimed_at": now}).encode(),
                content_type="application/json",
                if_absent=True,
            )
        except ObjectExistsError:
            return Claim(IN_PROGRESS, existing)
        taken = existing.evolve(
            generation=generation,
            claimed_until=now + self.claim_seconds,
            attempts=existing.attempts + 1,
            params=dict(params or existing.params),
            region=existing.region or region,
        )
        self._mark_inflight(taken)
        return Claim(ACQUIRED, self.save(taken))

    def release(self, record: JobRecord) -> JobRecord:
        """Give a `submitting` record up after a retryable failure so the retried event takes it at once."""
        return self.save(record.evolve(claimed_until=0.0))

    def mark_submitted(self, record: JobRecord, *, job_id: str, request_id: str | None) -> JobRecord:
        """Queue an asynchronous job: the pending entry first, so a crash never leaves a submitted job
        that no collector will ever see."""
        now = self.clock()
        submitted = record.evolve(
            state=SUBMITTED, job_id=job_id, request_id=request_id, submitted_at=now, updated_at=now
        )
        self.put_pending(submitted)
        saved = self.save(submitted)
        self._clear_inflight(record.record_id)
        return saved

    def mark_done(self, record: JobRecord, *, outputs: tuple[str, ...], request_id: str | None) -> JobRecord:
        request_id = request_id or record.request_id
        stored = record.evolve(
            state=DONE, outputs=outputs, request_id=request_id, answer=None, answer_expires_at=None
        )
        saved = self.save(stored)
        self._clear_inflight(record.record_id)
        return saved

    def mark_failed(self, record: JobRecord, error: Mapping[str, Any]) -> JobRecord:
        saved = self.save(record.evolve(state=FAILED, error=dict(error)))
        self._clear_inflight(record.record_id)
        return saved

    # -- uploads in flight ---------------------------------------------------------------------
    def _clear_inflight(self, record_id: str) -> None:
        """Best effort: the record's state is what counts, and `stalled()` drops a leftover mark."""
        with contextlib.suppress(StorageError):
            self.storage.delete(self.inflight_key(record_id))

    def _mark_inflight(self, record: JobRecord) -> None:
        body = json.dumps({"record_id": record.record_id, "key": record.key}, ensure_ascii=False)
        self.storage.put_bytes(
            self.inflight_key(record.record_id), body.encode("utf-8"), content_type="application/json"
        )

    def list_inflight(self, *, page_size: int = 1000) -> Iterator[str]:
        """Record ids of uploads still in `submitting` (or whose owner died before clearing the mark)."""
        prefix = self.inflight_prefix()
        for info in self.storage.list(prefix, page_size=page_size):
            name = info.key[len(prefix) :]
            if name.endswith(".json") and "/" not in name:
                yield name[: -len(".json")]

    def stalled(self, record_id: str, *, quiet_seconds: float) -> JobRecord | None:
        """The record if it is stuck in `submitting`: unclaimed (expired or released) and untouched for
        `quiet_seconds`; clears the mark of a record that is no longer submitting."""
        record = self.load(record_id)
        if record is None or record.state != SUBMITTING:
            self.storage.delete(self.inflight_key(record_id))
            return None
        now = self.clock()
        if record.claimed_until > now or record.updated_at + quiet_seconds > now:
            return None
        return record

    # -- pending jobs -------------------------------------------------------------------------
    def put_pending(self, record: JobRecord) -> None:
        self.storage.put_bytes(
            self.pending_key(record.record_id), record.to_json(), content_type="application/json"
        )

    def load_pending(self, record_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(self.storage.get_bytes(self.pending_key(record_id)))
        except ObjectNotFoundError:
            return None

    def list_pending(self, *, page_size: int = 1000) -> Iterator[str]:
        """Record ids of the pending jobs, a page at a time."""
        prefix = self.pending_prefix()
        for info in self.storage.list(prefix, page_size=page_size):
            name = info.key[len(prefix) :]
            if name.endswith(".json") and "/" not in name:
                yield name[: -len(".json")]

    def finish_pending(self, record_id: str) -> None:
        """Take a finished job out of the pending listing, then drop its leases."""
        self.storage.delete(self.pending_key(record_id))
        self.clear_leases(record_id)

    # -- leases -------------------------------------------------------------------------------
    def _lease_generations(self, record_id: str) -> list[tuple[int, str]]:
        prefix = self.lease_prefix(record_id)
        found: list[tuple[int, str]] = []
        for info in self.storage.list(prefix):
            suffix = info.key[len(prefix) :]
            if suffix.isdigit():
                found.append((int(suffix), info.key))
        return sorted(found)

    def try_lease(self, record_id: str, owner: str, *, seconds: float | None = None) -> Lease | None:
        """Claim a pending job, or None when another collector holds it (or won the race just now)."""
        now = self.clock()
        generations = self._lease_generations(record_id)
        generation = 0
        if generations:
            latest, latest_key = generations[-1]
            try:
                body = json.loads(self.storage.get_bytes(latest_key))
                expires_at = float(body.get("expires_at", 0.0))
            except ObjectNotFoundError:
                return None  # being cleaned up by a collector that just finished the job
            except (ValueError, TypeError, AttributeError):
                expires_at = 0.0  # unreadable lease: treat as expired rather than block the job forever
            if expires_at > now:
                return None
            generation = latest + 1
        lease = Lease(
            record_id=record_id,
            generation=generation,
            owner=owner,
            expires_at=now + (self.lease_seconds if seconds is None else seconds),
            key=f"{self.lease_prefix(record_id)}{generation:08d}",
        )
        try:
            self.storage.put_bytes(lease.key, self._lease_body(lease, now), if_absent=True)
        except ObjectExistsError:
            return None
        # Older generations are expired or released and can never be claimed again (the next claim is
        # generation + 1, which exists now): drop them so a long-running job keeps one lease file, not one
        # per tick.
        for _, old_key in generations:
            self.storage.delete(old_key)
        return lease

    def release_lease(self, lease: Lease) -> None:
        """Let the next tick claim the job at once (overwrites our own generation only)."""
        released = replace(lease, expires_at=0.0)
        self.storage.put_bytes(lease.key, self._lease_body(released, self.clock()))

    def clear_leases(self, record_id: str) -> None:
        for _, key in self._lease_generations(record_id):
            self.storage.delete(key)

    @staticmethod
    def _lease_body(lease: Lease, now: float) -> bytes:
        return json.dumps(
            {"owner": lease.owner, "generation": lease.generation, "expires_at": lease.expires_at, "at": now}
        ).encode("utf-8")
