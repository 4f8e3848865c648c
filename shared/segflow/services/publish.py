"""Publishing an outcome: the one writer of `<output>/<key>/<action>/` and `<failed>/<key>.json`, under the
key's publish lock and only for the object's current version (how, and why that is enough:
shared/ARCHITECTURE.md, "Versions").
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from segflow.deadline import Deadline
from segflow.errors import ObjectNotFoundError, SegflowError, StorageError
from segflow.failure_policy import PublishBusyError
from segflow.failure_records import FailureRecords
from segflow.jobqueue import Lease, Leases
from segflow.records import JobRecord
from segflow.services.deps import Deps
from segflow.storage.base import Storage
from segflow.values import Value

T = TypeVar("T")

POLL_SECONDS = 0.2
"""How often a publisher waiting for the lock looks again."""


class Version(Value):
    """One version of a source object: its key and ETag, and for a RefineMask pair the mask's too."""

    key: str
    etag: str
    mask_key: str | None = None
    mask_etag: str | None = None

    @classmethod
    def of(cls, job: JobRecord) -> Version:
        """The version a record is about (a pair's record ETag is `<image ETag>+<mask ETag>`)."""
        if job.mask_key:
            image, _, mask = job.etag.partition("+")
            return cls(job.key, image, job.mask_key, mask)
        return cls(job.key, job.etag)


class Publisher:
    """Publishes the outcomes of one bucket's objects, for one invocation (its deadline bounds the lock)."""

    __slots__ = ("deadline", "deps", "failures", "leases", "owner", "storage")

    def __init__(self, deps: Deps, storage: Storage, deadline: Deadline) -> None:
        self.deps = deps
        self.storage = storage
        self.deadline = deadline
        self.failures = FailureRecords(storage, deps.layout)
        self.leases = Leases(storage, deps.clock)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"

    def is_current(self, version: Version) -> bool:
        """Whether `version` is still what the bucket holds (a HEAD per half; a deleted one is not)."""
        halves = [(version.key, version.etag)]
        if version.mask_key is not None:
            halves.append((version.mask_key, version.mask_etag or ""))
        for key, etag in halves:
            try:
                if self.storage.head(key).etag != etag.strip('"').upper():
                    return False
            except ObjectNotFoundError:
                return False
        return True

    def result(self, version: Version, store: Callable[[], T]) -> tuple[T, SegflowError | None] | None:
        """`store()` the version's result, then clear the key's older failure record, under the lock;
        None when the version is no longer current. With the result comes the error that kept the clearing
        from going through, if one did (a later duplicate delivery finishes it: `clear_failure`)."""

        def write() -> tuple[T, SegflowError | None]:
            stored = store()
            try:
                self.failures.clear(version.key)
            except SegflowError as error:
                return stored, error
            return stored, None

        return self._locked(version, write)

    def failure(self, version: Version, document: Mapping[str, Any]) -> str | None:
        """Write the version's failure record (and its index entry) under the lock; None when the version
        is no longer current (nothing is written over the current version's outcome)."""
        return self._locked(version, lambda: self.failures.write(document))

    def clear_failure(self, version: Version) -> bool | None:
        """A done version's stale failure record removed (an interrupted cleanup finished); one read, and
        no lock, when there is none (the common case of a duplicate delivery)."""
        if self.failures.read(version.key) is None:
            return False
        return self._locked(version, lambda: self.failures.clear(version.key))

    # -- the lock -----------------------------------------------------------------------------------------
    def _locked(self, version: Version, write: Callable[[], T]) -> T | None:
        lease = self._take(version.key)
        try:
            written = write() if self.is_current(version) else None
        except Exception:
            self._let_go(lease)
            raise
        # Not on BaseException: a process dying here leaves the lock to its lease, as a real death does.
        self._let_go(lease)
        return written

    def _take(self, key: str) -> Lease:
        """The key's publish lock, waiting a little for another publisher; `PublishBusyError` after that."""
        prefix = self.deps.layout.publish_lock_prefix(key)
        hold = self.deps.hold_seconds(self.deadline)
        wait_until = time.monotonic() + min(self.deps.publish_wait_seconds, self.deadline.remaining())
        while True:
            lease = self.leases.take(key, prefix, self.owner, hold)
            if lease is not None:
                return lease
            if time.monotonic() >= wait_until:
                raise PublishBusyError(f"another invocation is publishing an outcome of {key} right now")
            time.sleep(POLL_SECONDS)

    def _let_go(self, lease: Lease) -> None:
        with contextlib.suppress(StorageError):  # a lock left behind ends with its lease
            self.leases.drop(lease)
