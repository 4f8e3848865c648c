"""`BucketLayout`: every key segflow reads or writes in a bucket, named in one place.

The keys and what each holds are listed in docs/operations.md ("What segflow keeps in a bucket"). Keys are
OSS keys (up to 1023 UTF-8 bytes); a result key is the source key plus a prefix and a suffix, so a long
source key can make it too long: `derived_keys_fit` says so before anything is paid for, and the failure
record then goes to the `_long/` form, which always fits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from segflow.storage.base import ObjectInfo, Storage

RESULT_NAME_BYTES = 48
"""Room kept for a result file's name (`element-12-origin.png`, `<part>.png`; see outputs.plan_files)."""
LONG_FAILURES = "_long/"


def as_prefix(prefix: str) -> str:
    """`prefix` ending in exactly one `/` (empty stays empty)."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


class BucketLayout:
    """The key layout of one deployment (prefixes from `Settings`)."""

    __slots__ = ("failed_prefix", "input_prefix", "jobs_prefix", "output_prefix")

    def __init__(
        self, output_prefix: str, jobs_prefix: str, failed_prefix: str, input_prefix: str = ""
    ) -> None:
        self.output_prefix = as_prefix(output_prefix)
        self.jobs_prefix = as_prefix(jobs_prefix)
        self.failed_prefix = as_prefix(failed_prefix)
        self.input_prefix = as_prefix(input_prefix)

    @classmethod
    def create(
        cls, output_prefix: str, jobs_prefix: str, failed_prefix: str, input_prefix: str = ""
    ) -> BucketLayout:
        return cls(output_prefix, jobs_prefix, failed_prefix, input_prefix)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BucketLayout):
            return NotImplemented
        return self._prefixes() == other._prefixes()

    def __hash__(self) -> int:
        return hash(self._prefixes())

    def __repr__(self) -> str:
        return "BucketLayout(output={!r}, jobs={!r}, failed={!r}, input={!r})".format(*self._prefixes())

    def _prefixes(self) -> tuple[str, str, str, str]:
        return (self.output_prefix, self.jobs_prefix, self.failed_prefix, self.input_prefix)

    # -- which keys are inputs ------------------------------------------------------------------------
    @property
    def own_prefixes(self) -> tuple[str, str, str]:
        return (self.output_prefix, self.jobs_prefix, self.failed_prefix)

    def is_own(self, key: str) -> bool:
        """True for keys segflow wrote itself: processing them would trigger itself forever."""
        return key.startswith(self.own_prefixes)

    def refusal(self, key: str) -> tuple[str, str] | None:
        """(code, reason) when `key` is not an input to process, else None. Applied to the key that is
        actually read and submitted, whatever form the event carried it in."""
        if self.is_own(key):
            return "OwnOutput", "key under a segflow prefix"
        if not key.startswith(self.input_prefix):
            return "OutsideInputPrefix", f"not under {self.input_prefix}"
        return None

    # -- results and failures -------------------------------------------------------------------------
    def result_prefix(self, source_key: str, action: str) -> str:
        return f"{self.output_prefix}{source_key}/{action}/"

    def manifest_key(self, source_key: str, action: str) -> str:
        return f"{self.result_prefix(source_key, action)}manifest.json"

    def failure_key(self, source_key: str, storage: Storage | None = None) -> str:
        """`<failed>/<source key>.json`, or the `_long/` form when `storage` could not hold that key."""
        plain = f"{self.failed_prefix}{source_key}.json"
        if storage is None or storage.accepts_key(plain):
            return plain
        return self.long_failure_key(source_key)

    def long_failure_key(self, source_key: str) -> str:
        """`<failed>/_long/<sha256>.json`: always a valid key, also for a key from an event that is not one
        (a lone surrogate is hashed as its code point, `surrogatepass`, so it never meets a real key)."""
        digest = hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()
        return f"{self.failed_prefix}{LONG_FAILURES}{digest}.json"

    def derived_keys_fit(self, storage: Storage, source_key: str, action: str) -> bool:
        """Whether every result key of `source_key` under `action` can be stored (checked before paying)."""
        longest = self.result_prefix(source_key, action) + "x" * RESULT_NAME_BYTES
        return storage.accepts_key(longest)

    # -- bookkeeping under the jobs prefix -------------------------------------------------------------
    def record_key(self, record_id: str) -> str:
        return f"{self.jobs_prefix}records/{record_id}.json"

    def claim_key(self, record_id: str, generation: int) -> str:
        return f"{self.jobs_prefix}claims/{record_id}.{generation:08d}"

    @property
    def inflight_prefix(self) -> str:
        return f"{self.jobs_prefix}inflight/"

    def inflight_key(self, record_id: str) -> str:
        return f"{self.inflight_prefix}{record_id}.json"

    @property
    def pending_prefix(self) -> str:
        return f"{self.jobs_prefix}pending/"

    def pending_key(self, record_id: str) -> str:
        return f"{self.pending_prefix}{record_id}.json"

    def lease_prefix(self, record_id: str) -> str:
        return f"{self.jobs_prefix}leases/{record_id}."

    def lease_key(self, record_id: str, generation: int) -> str:
        return f"{self.lease_prefix(record_id)}{generation:08d}"

    def work_key(self, record_id: str, extension: str) -> str:
        return f"{self.jobs_prefix}work/{record_id}{extension}"

    @property
    def done_prefix(self) -> str:
        return f"{self.jobs_prefix}state/done/"

    def done_key(self, record_id: str) -> str:
        return f"{self.done_prefix}{record_id}"

    @property
    def superseded_prefix(self) -> str:
        return f"{self.jobs_prefix}state/superseded/"

    def superseded_key(self, record_id: str) -> str:
        return f"{self.superseded_prefix}{record_id}"

    def publish_lock_prefix(self, source_key: str) -> str:
        """Where the publish lock of `source_key` lives: one per key, since the failure record is per key
        (and a key has one result folder per action)."""
        digest = hashlib.sha256(source_key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        return f"{self.jobs_prefix}publish/{digest}."

    @property
    def failure_index_prefix(self) -> str:
        return f"{self.jobs_prefix}state/failed/"

    @property
    def heartbeat_key(self) -> str:
        return f"{self.jobs_prefix}state/collector.json"

    def redrive_key(self, key_hash: str, failure_time: str) -> str:
        stamp = "".join(c for c in failure_time if c.isalnum())
        return f"{self.jobs_prefix}redrives/{key_hash}.{stamp}"

    @property
    def pairs_prefix(self) -> str:
        return f"{self.jobs_prefix}pairs/"

    def pair_key(self, pair_id: str) -> str:
        return f"{self.pairs_prefix}{pair_id}.json"

    @property
    def backfill_checkpoint_key(self) -> str:
        return f"{self.jobs_prefix}backfill/checkpoint.json"

    @property
    def deferred_prefix(self) -> str:
        return f"{self.jobs_prefix}deferred/"

    def deferred_key(self, marker_id: str) -> str:
        return f"{self.deferred_prefix}{marker_id}.json"


def entries_under(
    storage: Storage, prefix: str, *, page_size: int = 1000
) -> Iterator[tuple[str, ObjectInfo]]:
    """(`<id>`, what the listing says of it) for every `<prefix><id>.json` directly under `prefix`, a
    listing page at a time: no object is read."""
    for info in storage.list(prefix, page_size=page_size):
        name = info.key[len(prefix) :]
        if name.endswith(".json") and "/" not in name:
            yield name[: -len(".json")], info


def ids_under(storage: Storage, prefix: str, *, page_size: int = 1000) -> Iterator[str]:
    """The `<id>` of every `<prefix><id>.json` directly under `prefix`, a listing page at a time."""
    for record_id, _ in entries_under(storage, prefix, page_size=page_size):
        yield record_id
