"""The queue of asynchronous jobs still to collect, and the put-if-absent leases that guard them.

A job's record is copied to `<jobs>/pending/` while it is unfinished (so a tick lists only what is still
pending; the keys: `layout.BucketLayout`). A lease of generation n+1 may only be created (put-if-absent)
once generation n has expired or been given up by its owner: of two takers, OSS lets exactly one create
it. Collectors lease jobs; a publish lock (`services.publish`) is the same kind of lease.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from segflow.errors import ObjectExistsError, ObjectNotFoundError
from segflow.layout import BucketLayout, ids_under
from segflow.records import Clock, JobRecord, RecordStore
from segflow.states import RecordStates
from segflow.storage.base import Storage
from segflow.values import Value, replace


class Lease(Value):
    """An owner's hold on one name until `expires_at`."""

    record_id: str
    """What is held: a job's record id, or a publish lock's name."""
    generation: int
    owner: str
    expires_at: float
    key: str


class Leases:
    """Put-if-absent leases `<prefix><generation>`, one prefix per thing held."""

    def __init__(self, storage: Storage, clock: Clock = time.time) -> None:
        self.storage = storage
        self.clock = clock

    def _generations(self, prefix: str) -> list[tuple[int, str]]:
        found = [(info.key[len(prefix) :], info.key) for info in self.storage.list(prefix)]
        return sorted((int(suffix), key) for suffix, key in found if suffix.isdigit())

    def _expiry(self, lease_key: str) -> float | None:
        """When the lease in `lease_key` runs out; None when it vanished (its holder is cleaning up)."""
        try:
            body = json.loads(self.storage.get_bytes(lease_key))
            return float(body.get("expires_at", 0.0))
        except ObjectNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError):
            return 0.0  # unreadable lease: treat as expired rather than block the job forever

    def take(self, name: str, prefix: str, owner: str, seconds: float) -> Lease | None:
        """The next generation under `prefix`, or None while another owner holds it (or won it just now)."""
        now = self.clock()
        generations = self._generations(prefix)
        generation = 0
        if generations:
            latest, latest_key = generations[-1]
            expires_at = self._expiry(latest_key)
            if expires_at is None or expires_at > now:
                return None
            generation = latest + 1
        lease = Lease(name, generation, owner, now + seconds, f"{prefix}{generation:08d}")
        try:
            self.storage.put_bytes(lease.key, _lease_body(lease, now), if_absent=True)
        except ObjectExistsError:
            return None
        # Older generations are expired or given up and can never be taken again (the next one is
        # generation + 1, which exists now): drop them so one lease file stays.
        for _, old_key in generations:
            self.storage.delete(old_key)
        return lease

    def give_up(self, lease: Lease) -> None:
        """Let the next taker have it at once (overwrites our own generation only)."""
        self.storage.put_bytes(lease.key, _lease_body(replace(lease, expires_at=0.0), self.clock()))

    def drop(self, lease: Lease) -> None:
        """Give it up by deleting it: for a lock taken and let go at each use, so no file stays. Only the
        owner deletes, and only while its lease runs, so no taker can have seen it expired."""
        self.storage.delete(lease.key)

    def clear(self, prefix: str) -> None:
        for _, key in self._generations(prefix):
            self.storage.delete(key)


def _lease_body(lease: Lease, now: float) -> bytes:
    body = {"owner": lease.owner, "generation": lease.generation, "expires_at": lease.expires_at, "at": now}
    return json.dumps(body).encode("utf-8")


class JobQueue:
    """The pending jobs and their leases in one bucket."""

    def __init__(
        self,
        storage: Storage,
        layout: BucketLayout,
        *,
        clock: Clock = time.time,
        lease_seconds: float = 300.0,
    ) -> None:
        self.storage = storage
        self.layout = layout
        self.clock = clock
        self.lease_seconds = lease_seconds
        self.leases = Leases(storage, clock)

    # -- pending jobs ---------------------------------------------------------------------------------
    def put(self, record: JobRecord) -> None:
        key = self.layout.pending_key(record.record_id)
        self.storage.put_bytes(key, record.to_json(), content_type="application/json")

    def load(self, record_id: str) -> JobRecord | None:
        try:
            return JobRecord.from_json(self.storage.get_bytes(self.layout.pending_key(record_id)))
        except ObjectNotFoundError:
            return None

    def ids(self, *, page_size: int = 1000) -> Iterator[str]:
        """Record ids of the pending jobs, a page at a time."""
        return ids_under(self.storage, self.layout.pending_prefix, page_size=page_size)

    def finish(self, record_id: str) -> None:
        """Take a finished job out of the pending listing, then drop its leases."""
        self.storage.delete(self.layout.pending_key(record_id))
        self.clear_leases(record_id)

    # -- leases ---------------------------------------------------------------------------------------
    def try_lease(self, record_id: str, owner: str, *, seconds: float | None = None) -> Lease | None:
        """Claim a pending job, or None when another collector holds it (or won the race just now)."""
        prefix = self.layout.lease_prefix(record_id)
        return self.leases.take(record_id, prefix, owner, self.lease_seconds if seconds is None else seconds)

    def release_lease(self, lease: Lease) -> None:
        """Let the next tick claim the job at once."""
        self.leases.give_up(lease)

    def clear_leases(self, record_id: str) -> None:
        self.leases.clear(self.layout.lease_prefix(record_id))


def queue_job(
    records: RecordStore, queue: JobQueue, record: JobRecord, *, job_id: str, request_id: str | None
) -> JobRecord:
    """Queue an asynchronous job: the pending entry first, then the record, so a crash in between never
    leaves a submitted job that no collector will see (`RecordStore.begin` reads the pending entry)."""
    submitted = replace(record, state=RecordStates.SUBMITTED).with_payload(
        job_id=job_id, request_id=request_id, submitted_at=records.clock()
    )
    queue.put(submitted)
    return records.mark_submitted(submitted, job_id=job_id, request_id=request_id)
