"""Failure records and their index: what an operator reads, and what `segflow status` / `redrive` list.

A failure record `<failed>/<source key>.json` has one index entry `<jobs>/state/failed/<kind>/<code>/
<action>/<hash>` (kind `failed`: final; `fault`: a deployment fault, retryable once fixed), so counting
failures is a listing, with no record read. The entry changes only with its record: written with it,
rewritten when a later attempt fails differently, removed with it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from segflow.errors import ObjectNotFoundError
from segflow.layout import BucketLayout
from segflow.storage.base import Storage
from segflow.values import Value

FAILED = "failed"
FAULT = "fault"
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def key_hash(source_key: str) -> str:
    return hashlib.sha256(source_key.encode("utf-8")).hexdigest()[:40]


def _segment(value: object) -> str:
    text = str(value) if value else "-"
    return "".join(c if c in _SAFE else "_" for c in text)[:64] or "-"


class IndexEntry(Value):
    """One failure as a listing shows it."""

    kind: str
    code: str
    action: str
    key_hash: str
    index_key: str
    last_modified: float | None


class FailureRecords:
    """The failure records of one bucket, with their index."""

    def __init__(self, storage: Storage, layout: BucketLayout) -> None:
        self.storage = storage
        self.layout = layout

    def index_key(self, document: Mapping[str, Any]) -> str:
        kind = FAULT if document.get("Fault") else FAILED
        parts = (kind, _segment(document.get("Code")), _segment(document.get("Action")))
        return f"{self.layout.failure_index_prefix}{'/'.join(parts)}/{key_hash(str(document['Key']))}"

    def read(self, source_key: str, failure_key: str | None = None) -> dict[str, Any] | None:
        """The failure record of `source_key` (at `failure_key` when it is not the key's own place)."""
        try:
            document: dict[str, Any] = json.loads(
                self.storage.get_bytes(failure_key or self.layout.failure_key(source_key, self.storage))
            )
        except ObjectNotFoundError:
            return None
        except ValueError:
            return {"Key": source_key, "Code": "CorruptFailureRecord"}
        return document

    def write(self, document: Mapping[str, Any], failure_key: str | None = None) -> str:
        """Write (or overwrite) the record of `document["Key"]` and its index entry; returns its key.
        `failure_key`: where it goes when not the key's own place (a key from an event that names no
        object: `BucketLayout.long_failure_key`)."""
        source_key = str(document["Key"])
        failure_key = failure_key or self.layout.failure_key(source_key, self.storage)
        previous = self.read(source_key, failure_key)
        body = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
        self.storage.put_bytes(failure_key, body, content_type="application/json")
        entry = self.index_key(document)
        pointer = json.dumps({"Key": source_key, "FailureKey": failure_key}, ensure_ascii=False).encode(
            "utf-8"
        )
        self.storage.put_bytes(entry, pointer, content_type="application/json")
        if previous is not None and "Key" in previous and self.index_key(previous) != entry:
            self.storage.delete(self.index_key(previous))
        return failure_key

    def clear(self, source_key: str) -> bool:
        """Remove the record of `source_key` and its index entry (a later attempt succeeded). One read when
        there is none, so the common case costs what a blind delete would."""
        previous = self.read(source_key)
        if previous is None:
            return False
        self.storage.delete(self.layout.failure_key(source_key, self.storage))
        if "Key" in previous:
            self.storage.delete(self.index_key(previous))
        return True

    def entries(self, *, kind: str | None = None, page_size: int = 1000) -> Iterator[IndexEntry]:
        """Every failure, from the index listing alone (optionally one kind)."""
        prefix = self.layout.failure_index_prefix + (f"{kind}/" if kind else "")
        for info in self.storage.list(prefix, page_size=page_size):
            parts = info.key[len(self.layout.failure_index_prefix) :].split("/")
            if len(parts) == 4:
                yield IndexEntry(parts[0], parts[1], parts[2], parts[3], info.key, info.last_modified)

    def source_key(self, entry: IndexEntry) -> str | None:
        """The source key an index entry stands for (one read)."""
        pointer = self.pointer(entry)
        return pointer[0] if pointer is not None else None

    def pointer(self, entry: IndexEntry) -> tuple[str, str] | None:
        """(source key, failure record key) an index entry points at (one read)."""
        try:
            pointer = json.loads(self.storage.get_bytes(entry.index_key))
        except (ObjectNotFoundError, ValueError):
            return None
        key = pointer.get("Key") if isinstance(pointer, dict) else None
        if not isinstance(key, str):
            return None
        failure_key = pointer.get("FailureKey")
        return key, failure_key if isinstance(failure_key, str) else self.layout.failure_key(
            key, self.storage
        )
