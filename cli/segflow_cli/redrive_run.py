"""The work of `segflow redrive` (its options: `segflow_cli.redrive`; what it guarantees: docs/operations.md).

The failure index (`failure_records`) is listed by kind, code, action and time without reading a record;
`_Redrive._prepare` takes each failure that matches in turn, and a send FC refuses gives back the batch's
markers and records (`_Redrive._give_back`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segflow.errors import ObjectExistsError, ObjectNotFoundError, SegflowError
from segflow.failure_records import FailureRecords, IndexEntry, key_hash
from segflow.records import JobRecord, RecordStore, record_id_for
from segflow.states import RecordStates
from segflow.storage.base import ObjectInfo
from segflow_cli.batches import Prefetch, batched, run_batches
from segflow_cli.objects import parse_when, resolve_prefix
from segflow_cli.operate import Operation, open_operation
from segflow_cli.output import INTERRUPTED, refuse
from segflow_cli.progress import TransferProgress
from segflow_cli.senders import LocalSender, ObjectResult, SendRefused
from segflow_cli.summary import FINISHED_OUTCOMES, RunSummary

PROG = "segflow redrive"


@dataclass(frozen=True)
class Wanted:
    """The failures to redrive, compared with the index's (sanitised) segments."""

    kind: str | None
    codes: frozenset[str]
    actions: frozenset[str]
    prefix: str | None
    since: float | None
    until: float | None

    def admits(self, entry: IndexEntry) -> bool:
        if self.codes and entry.code not in self.codes:
            return False
        if self.actions and entry.action not in self.actions:
            return False
        if self.since is not None or self.until is not None:
            when = entry.last_modified
            if when is None or (self.since is not None and when < self.since):
                return False
            if self.until is not None and when >= self.until:
                return False
        return True


def run_redrive(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """One redrive; raises `SegflowError` for what exits 2 (nothing sent then)."""
    with open_operation(args, environ) as operation:
        failures = FailureRecords(operation.storage, operation.layout)
        wanted = _wanted(args, operation, failures)
        candidates = _candidates(failures, wanted, args.limit)
        first = next(candidates, None)
        if first is None:
            return refuse(
                PROG,
                f"no failure record of bucket {operation.bucket} matches: nothing to do",
                as_json=args.json,
                code="NothingMatches",
            )
        redrive = _Redrive(operation, failures, wanted, dry_run=args.dry_run)
        return redrive.run(_chain(first, candidates), args)


def _chain(first: IndexEntry, rest: Iterator[IndexEntry]) -> Iterator[IndexEntry]:
    yield first
    yield from rest


def _wanted(args: argparse.Namespace, operation: Operation, failures: FailureRecords) -> Wanted:
    def segments(code: str | None, action: str | None) -> tuple[str, str]:
        # The index's own rule for a code or an action in a key (`FailureRecords.index_key`).
        index_key = failures.index_key({"Key": "", "Code": code, "Action": action})
        parts = index_key[len(operation.layout.failure_index_prefix) :].split("/")
        return parts[1], parts[2]

    return Wanted(
        kind=None if args.kind == "all" else args.kind,
        codes=frozenset(segments(code, None)[0] for code in args.code),
        actions=frozenset(segments(None, action)[1] for action in args.action),
        prefix=resolve_prefix(args.prefix, operation.settings.input_prefix) if args.prefix else None,
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
    )


def _candidates(failures: FailureRecords, wanted: Wanted, limit: int | None) -> Iterator[IndexEntry]:
    from segflow_cli.objects import bucket_error

    count = 0
    try:
        for entry in failures.entries(kind=wanted.kind):
            if wanted.admits(entry):
                yield entry
                count += 1
                if limit and count >= limit:
                    return
    except SegflowError as error:
        from segflow.errors import StorageError

        if isinstance(error, StorageError):
            raise bucket_error(
                error, failures.storage.bucket, failures.layout.failure_index_prefix
            ) from error
        raise


def failure_identity(document: Mapping[str, Any]) -> str:
    """Which failure a marker is about: its time, and a digest of its content (a file failing again in
    the same second with another code or request id is another failure). So the same failure is never
    sent twice, and a new failure of the same file can be."""
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]
    return f"{document.get('Time') or ''}-{digest}"


@dataclass
class _Taken:
    """What preparing one batch took (by source key), to give back for what was not handed over."""

    markers: dict[str, str] = field(default_factory=dict)
    reopened: dict[str, JobRecord] = field(default_factory=dict)


class _Redrive:
    """One run: prepare each batch (markers, reopened records), send it, count."""

    def __init__(self, operation: Operation, failures: FailureRecords, wanted: Wanted, *, dry_run: bool):
        self.operation = operation
        self.failures = failures
        self.wanted = wanted
        self.dry_run = dry_run
        self.records = RecordStore(operation.storage, operation.layout)
        self.summary = RunSummary("redrive", operation.bucket, operation.via or "dry-run")
        self.owner = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, candidates: Iterator[IndexEntry], args: argparse.Namespace) -> int:
        via = self.operation.via
        label = "queued in FC" if via == "fc" else ("checked" if self.dry_run else "finished")
        progress = TransferProgress(f"{PROG} {self.operation.bucket}", finished_label=label)
        prefetch = Prefetch(candidates, on_item=lambda: progress.add(listed=1), on_end=progress.listing_ended)
        try:
            end = run_batches(
                batched(prefetch, args.batch),
                self.handle,
                lambda batch, results, _in_order: self._settled(batch, results, progress),
                workers=args.workers,
            )
            progress.listing_ended()
            sender = self.operation.sender
            if (
                isinstance(sender, LocalSender)
                and self.summary.submitted
                and not (args.no_wait or end.interrupted)
            ):
                from segflow_cli.localrun import finish_jobs

                finish_jobs(sender.runtime, self.summary, progress, timeout=args.timeout)
        finally:
            prefetch.close()
            progress.close()
        if end.refused is not None:
            self.summary.add(end.refused.results)
        self._notes(end.refused, end.interrupted)
        self.summary.print(as_json=args.json)
        if end.interrupted:
            return INTERRUPTED
        return 1 if end.refused is not None or self.summary.bad else 0

    def _settled(
        self, batch: list[IndexEntry], results: Sequence[ObjectResult], progress: TransferProgress
    ) -> None:
        added = self.summary.add(results)
        skipped = ("held", "gone", "not-failed", "already-done", "superseded")
        sent = sum(v for k, v in added.items() if k not in skipped)
        finished = sum(v for k, v in added.items() if k in FINISHED_OUTCOMES or k in ("sent", "would-send"))
        failed = sum(added[k] for k in ("failed", "fault", "unfinished"))
        progress.add(sent=sent, finished=finished, failed=failed)

    # -- one batch ------------------------------------------------------------------------------------

    def handle(self, batch: list[IndexEntry]) -> list[ObjectResult]:
        taken = _Taken()
        targets: list[ObjectInfo] = []
        results: list[ObjectResult] = []
        try:
            for entry in batch:
                prepared = self._prepare(entry, taken)
                if isinstance(prepared, ObjectResult):
                    results.append(prepared)
                elif prepared is not None:
                    targets.append(prepared)
            sender = self.operation.sender
            if sender is None or not targets:  # a dry run, or nothing to send
                return results + [ObjectResult(t.key, "would-send", etag=t.etag) for t in targets]
            return results + sender.send(targets)
        except SendRefused as refused:
            self._give_back(taken, handed_over={r.key for r in refused.results})
            refused.results = results + refused.results
            raise
        except SegflowError as error:
            self._give_back(taken, handed_over=set())
            raise SendRefused(f"redrive stopped: {error}", code=error.code, results=results) from error

    def _prepare(self, entry: IndexEntry, taken: _Taken) -> ObjectInfo | ObjectResult | None:
        """The object to send for one failure, or why it is not sent (None: not wanted after all): its
        failure record is read (gone: skipped), the object HEADed (deleted: `gone`), its idempotency record
        read (`done`: the stale failure record is cleared, nothing sent), the marker
        `<jobs>/redrives/<hash>.<failure>` created put-if-absent (held by another redrive: `held`), and a
        `failed` record reopened (`RecordStore.reopen`); then it is sent like a backfill's."""
        key = self.failures.source_key(entry)
        if key is None:
            return ObjectResult(entry.key_hash, "not-failed", detail="the failure record went away")
        if self.wanted.prefix is not None and not key.startswith(self.wanted.prefix):
            return None
        document = self.failures.read(key)
        if document is None or not self._still_wanted(document):
            return ObjectResult(key, "not-failed", detail="the failure record changed or went away")
        action, code = document.get("Action"), document.get("Code")
        try:
            info = self.operation.storage.head(key)
        except ObjectNotFoundError:
            return ObjectResult(key, "gone", action, code, "the object was deleted")
        record = self._record(key, document, info)
        if record is not None and record.state == RecordStates.SUPERSEDED:
            # That version's outcome was never written (a newer one, or a deletion, came first): not resent.
            return ObjectResult(key, "superseded", action, code, "replaced or deleted before it ended")
        if record is not None and record.state == RecordStates.DONE:
            if not self.dry_run:
                self.failures.clear(key)  # a result exists: the failure record is stale
            return ObjectResult(key, "already-done", action, code, "stale failure record cleared")
        if self.dry_run:
            return info
        if not self._take_marker(key, document, taken):
            return ObjectResult(key, "held", action, code, "another redrive has it")
        if record is not None and record.state == RecordStates.FAILED:
            reopened = self.records.reopen(record.record_id)
            if reopened is None:
                return ObjectResult(key, "held", action, code, "the record was reopened elsewhere")
            taken.reopened[key] = reopened
        return info

    def _still_wanted(self, document: Mapping[str, Any]) -> bool:
        """The record read now still matches (it may have been rewritten since the listing)."""
        entry_key = self.failures.index_key(document)
        parts = entry_key[len(self.operation.layout.failure_index_prefix) :].split("/")
        kind_ok = self.wanted.kind is None or parts[0] == self.wanted.kind
        return (
            kind_ok
            and (not self.wanted.codes or parts[1] in self.wanted.codes)
            and (not self.wanted.actions or parts[2] in self.wanted.actions)
        )

    def _record(self, key: str, document: Mapping[str, Any], info: ObjectInfo) -> JobRecord | None:
        """The idempotency record the failure is about, when it is about the object as it is now."""
        etag = str(document.get("ETag") or "").strip('"').upper()
        if etag != info.etag:
            return None  # replaced since: the new version is sent as it is, its own record decides
        record_id = document.get("RecordId")
        if not record_id and document.get("Action"):
            record_id = record_id_for(self.operation.bucket, key, etag, str(document["Action"]))
        return self.records.load(str(record_id)) if record_id else None

    def _take_marker(self, key: str, document: Mapping[str, Any], taken: _Taken) -> bool:
        marker = self.operation.layout.redrive_key(key_hash(key), failure_identity(document))
        body = {"Key": key, "Failure": document.get("Time"), "Code": document.get("Code"), "By": self.owner}
        body["At"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        try:
            self.operation.storage.put_bytes(
                marker, json.dumps(body, ensure_ascii=False).encode("utf-8"), if_absent=True
            )
        except ObjectExistsError:
            return False
        taken.markers[key] = marker
        return True

    def _give_back(self, taken: _Taken, *, handed_over: set[str]) -> None:
        """The batch stopped before these objects were handed over: undo what preparing them took, so the
        next redrive takes them again (what was handed over keeps its marker: it was redriven)."""
        for key, record in taken.reopened.items():
            if key in handed_over:
                continue
            try:
                self.records.mark_failed(record, dict(record.payload.error or {}))
            except SegflowError as error:
                print(f"{PROG}: could not hand back {record.key} ({error.code})", file=sys.stderr)
        for key, marker in taken.markers.items():
            if key in handed_over:
                continue
            try:
                self.operation.storage.delete(marker)
            except SegflowError as error:
                print(f"{PROG}: could not remove the marker {marker} ({error.code})", file=sys.stderr)

    def _notes(self, refused: SendRefused | None, interrupted: bool) -> None:
        notes, counts = self.summary.notes, self.summary.counts
        if refused is not None:
            notes.append(f"stopped: {refused.message}")
        if interrupted:
            notes.append("interrupted: run the same command again to redrive the rest")
        if counts["held"]:
            notes.append(f"{counts['held']:,} held by another redrive (not sent again)")
        if counts["superseded"]:
            notes.append(
                f"{counts['superseded']:,} ended superseded (a newer version or a deletion came first): "
                "not sent"
            )
        if counts["already-done"]:
            notes.append(
                f"{counts['already-done']:,} had a result already: their stale failure records are cleared"
            )
        if self.operation.via == "fc":
            notes.append("FC runs them now; `segflow status` shows how they end")
        if self.dry_run:
            notes.append("dry run: nothing was written or sent")
