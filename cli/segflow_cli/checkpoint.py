"""Where a backfill stopped, so the next run continues from there.

A checkpoint names the bucket, the filters (`ObjectFilter.describe()`), the last key whose batch — and
every batch before it — was handled (`StartAfter`: OSS lists after any key, in key order), the counts so
far, and whether the listing reached its end (`Finished`). It lives in the bucket at
`<jobs>/backfill/checkpoint.json` (`BucketLayout.backfill_checkpoint_key`) or in a local file
(`--checkpoint FILE`), written whole each time (an object PUT and a file rename are both atomic).

Resuming is refused when the checkpoint is about another bucket, or is unfinished and about other
filters: continuing it would skip (or repeat) objects the operator did not mean. A finished checkpoint
with other filters is history and is replaced; with the same filters there is nothing left to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from segflow.errors import ConfigError, ObjectNotFoundError
from segflow.outputs import iso_time
from segflow.storage.base import Storage

VERSION = 1


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used for this run (another bucket, other filters, unreadable)."""

    default_code = "CheckpointMismatch"


@dataclass
class Checkpoint:
    """One backfill's progress."""

    bucket: str
    filters: dict[str, Any]
    start_after: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    finished: bool = False
    started_at: float = 0.0
    updated_at: float = 0.0
    via: str = ""

    def add(self, counts: dict[str, int]) -> None:
        for name, value in counts.items():
            self.counts[name] = self.counts.get(name, 0) + value

    def to_json(self) -> bytes:
        document = {
            "Version": VERSION,
            "Bucket": self.bucket,
            "Filters": self.filters,
            "StartAfter": self.start_after,
            "Counts": dict(sorted(self.counts.items())),
            "Finished": self.finished,
            "StartedAt": iso_time(self.started_at),
            "UpdatedAt": iso_time(self.updated_at),
            "Started": self.started_at,
            "Updated": self.updated_at,
            "Via": self.via,
        }
        return json.dumps(document, ensure_ascii=False, indent=1).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Checkpoint:
        try:
            document = json.loads(raw)
            if document.get("Version") != VERSION:
                raise ValueError(f"version {document.get('Version')!r}")
            return cls(
                bucket=str(document["Bucket"]),
                filters=dict(document["Filters"]),
                start_after=str(document.get("StartAfter") or ""),
                counts={str(k): int(v) for k, v in (document.get("Counts") or {}).items()},
                finished=bool(document.get("Finished")),
                started_at=float(document.get("Started") or 0.0),
                updated_at=float(document.get("Updated") or 0.0),
                via=str(document.get("Via") or ""),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"the checkpoint {where} is unreadable ({exc}); pass --restart to start over",
                code="CorruptCheckpoint",
            ) from exc


class CheckpointStore(Protocol):
    where: str

    def load(self) -> Checkpoint | None: ...

    def save(self, checkpoint: Checkpoint) -> None: ...


class BucketCheckpoint:
    """The checkpoint as an object of the bucket being backfilled."""

    def __init__(self, storage: Storage, key: str) -> None:
        from segflow_cli.localbucket import LocalDirStorage

        self.storage = storage
        self.key = key
        if isinstance(storage, LocalDirStorage):
            self.where = str(storage.path_for(key))
        else:
            self.where = f"oss://{storage.bucket}/{key}"

    def load(self) -> Checkpoint | None:
        try:
            raw = self.storage.get_bytes(self.key)
        except ObjectNotFoundError:
            return None
        return Checkpoint.from_json(raw, self.where)

    def save(self, checkpoint: Checkpoint) -> None:
        self.storage.put_bytes(self.key, checkpoint.to_json(), content_type="application/json")


class FileCheckpoint:
    """The checkpoint as a local file (`--checkpoint FILE`), replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path).expanduser()
        self.where = str(self.path)

    def load(self) -> Checkpoint | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointError(f"cannot read the checkpoint {self.where}: {exc.strerror}") from exc
        return Checkpoint.from_json(raw, self.where)

    def save(self, checkpoint: Checkpoint) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(checkpoint.to_json())
            tmp.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise


def resume(
    store: CheckpointStore, bucket: str, filters: dict[str, Any], *, restart: bool, now: float, via: str
) -> tuple[Checkpoint, Checkpoint | None]:
    """The checkpoint this run continues (or a fresh one), and the one found (None when there was none).
    Raises `CheckpointError` when the found one belongs to another bucket or to an unfinished backfill
    with other filters."""
    found = store.load()
    fresh = Checkpoint(bucket=bucket, filters=filters, started_at=now, updated_at=now, via=via)
    if found is None:
        return fresh, None
    if found.bucket != bucket:
        raise CheckpointError(
            f"the checkpoint {store.where} is about bucket {found.bucket}, not {bucket}: "
            "use another --checkpoint file (nothing was sent)"
        )
    if restart:
        return fresh, found
    if found.filters != filters:
        if found.finished:
            return fresh, found  # a finished backfill of other objects: history, not something to resume
        raise CheckpointError(
            f"the checkpoint {store.where} is an unfinished backfill of other objects "
            f"({describe_filters(found.filters)}, stopped after {found.start_after or 'the start'}): "
            "run it again with the same filters to finish it, pass --restart to drop it, or use "
            "--checkpoint FILE for this one (nothing was sent)"
        )
    return found, found


def describe_filters(filters: dict[str, Any]) -> str:
    parts = [f"prefix {filters.get('Prefix')!r}"]
    if filters.get("Suffixes"):
        parts.append(f"suffixes {filters['Suffixes']}")
    for name in ("Since", "Until"):
        if filters.get(name) is not None:
            parts.append(f"{name.lower()} {iso_time(float(filters[name]))}")
    return ", ".join(parts)
