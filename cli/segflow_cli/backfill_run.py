"""The work of `segflow backfill` (the command and its options: `segflow_cli.backfill`): list, send,
checkpoint, report."""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from segflow.storage.base import ObjectInfo
from segflow_cli.batches import Prefetch, RunEnd, batched, run_batches
from segflow_cli.checkpoint import BucketCheckpoint, Checkpoint, CheckpointStore, FileCheckpoint, resume
from segflow_cli.objects import ObjectFilter, list_objects, parse_when, resolve_prefix
from segflow_cli.operate import Operation, open_operation
from segflow_cli.output import INTERRUPTED, refuse
from segflow_cli.progress import TransferProgress
from segflow_cli.senders import LocalSender, ObjectResult, Sender
from segflow_cli.summary import FINISHED_OUTCOMES, RunSummary

if TYPE_CHECKING:
    from segflow_cli.localrun import LocalRuntime

PROG = "segflow backfill"
SAVE_EVERY = 2.0


def run_backfill(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """One backfill; raises `SegflowError` for what exits 2 (nothing sent then)."""
    with open_operation(args, environ) as operation:
        wanted = ObjectFilter(
            resolve_prefix(args.prefix, operation.settings.input_prefix),
            tuple(args.suffix),
            parse_when(args.since) if args.since else None,
            parse_when(args.until) if args.until else None,
        )
        store: CheckpointStore = (
            FileCheckpoint(args.checkpoint)
            if args.checkpoint
            else BucketCheckpoint(operation.storage, operation.layout.backfill_checkpoint_key)
        )
        checkpoint, found = resume(
            store,
            operation.bucket,
            wanted.describe(),
            restart=args.restart,
            now=time.time(),
            via=operation.via or "dry-run",
        )
        if found is checkpoint and checkpoint.finished:
            message = (
                f"the backfill of {operation.bucket} ({wanted.text()}) finished already "
                f"({_counted(checkpoint.counts)}; {store.where}): nothing to do. --restart lists it again "
                "(objects already done cost no vision call)."
            )
            _said(operation, message, args.json, counts=checkpoint.counts)
            return 0
        return _Backfill(operation, wanted, checkpoint, store, args).run()


def _said(operation: Operation, message: str, as_json: bool, *, counts: Mapping[str, int]) -> None:
    """A run that ends before sending anything: one line, or with `--json` a summary holding it."""
    if not as_json:
        print(f"{PROG}: {message}")
        return
    summary = RunSummary("backfill", operation.bucket, operation.via or "dry-run")
    summary.counts.update({k: v for k, v in counts.items() if v})
    summary.notes.append(message)
    summary.print(as_json=True)


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in sorted(counts.items()) if v) or "nothing"


class _Backfill:
    """One run: listing, sending, the checkpoint, the progress line and the summary."""

    def __init__(
        self,
        operation: Operation,
        wanted: ObjectFilter,
        checkpoint: Checkpoint,
        store: CheckpointStore,
        args: argparse.Namespace,
    ) -> None:
        self.operation = operation
        self.wanted = wanted
        self.checkpoint = checkpoint
        self.store = store
        self.args = args
        self.summary = RunSummary("backfill", operation.bucket, operation.via or "dry-run")
        self.more_left = False
        """--limit stopped the listing before its end."""
        self._saved = 0.0

    def listing(self) -> Iterator[ObjectInfo]:
        objects = list_objects(
            self.operation.storage,
            self.operation.layout,
            self.wanted,
            start_after=self.checkpoint.start_after,
        )
        return self._limited(objects, self.args.limit) if self.args.limit else objects

    def _limited(self, objects: Iterator[ObjectInfo], limit: int) -> Iterator[ObjectInfo]:
        for count, info in enumerate(objects, 1):
            if count > limit:
                self.more_left = True  # one object past the limit was listed: the backfill is not over
                return
            yield info

    def run(self) -> int:
        objects = self.listing()
        first = next(objects, None)  # a missing bucket or a denied listing is known before any send
        if first is None:
            return self._nothing_listed()
        objects = itertools.chain([first], objects)
        sender = self.operation.sender
        if sender is None:  # a dry run
            from segflow_cli.dryrun import plan, plan_document, print_plan
            from segflow_cli.output import print_json

            planned = plan(self.operation, objects, workers=self.args.workers)
            if self.args.json:
                print_json(plan_document(planned, bucket=self.operation.bucket))
            else:
                print_plan(planned, via=None)
            return 0
        return self._send(objects, sender)

    def _nothing_listed(self) -> int:
        if self.checkpoint.start_after:
            if not self.args.dry_run:
                self.checkpoint.finished = True
                self._save(force=True)
            message = f"nothing left after {self.checkpoint.start_after}: the backfill is finished."
            _said(self.operation, message, self.args.json, counts={})
            return 0
        return refuse(
            PROG,
            f"no object of bucket {self.operation.bucket} matches ({self.wanted.text()}): nothing to do",
            as_json=self.args.json,
            code="NothingMatches",
        )

    def _send(self, objects: Iterator[ObjectInfo], sender: Sender) -> int:
        label = "queued in FC" if sender.via == "fc" else "finished"
        progress = TransferProgress(f"{PROG} {self.operation.bucket}", finished_label=label)
        prefetch = Prefetch(objects, on_item=lambda: progress.add(listed=1), on_end=progress.listing_ended)
        try:
            end = run_batches(
                batched(prefetch, self.args.batch),
                sender.send,
                lambda batch, results, in_order: self._settled(batch, results, in_order, progress),
                workers=self.args.workers,
            )
            progress.listing_ended()
            self._finish(end)
            if (
                isinstance(sender, LocalSender)
                and self.summary.submitted
                and not (self.args.no_wait or end.interrupted)
            ):
                self._wait(progress, sender.runtime)
        finally:
            prefetch.close()
            progress.close()
        return self._report(end)

    def _settled(
        self,
        batch: list[ObjectInfo],
        results: Sequence[ObjectResult],
        in_order: bool,
        progress: TransferProgress,
    ) -> None:
        added = self.summary.add(results)
        finished = sum(v for k, v in added.items() if k in FINISHED_OUTCOMES or k == "sent")
        failed = sum(added[k] for k in ("failed", "fault", "unfinished"))
        progress.add(sent=len(batch), finished=finished, failed=failed)
        if in_order:
            self.checkpoint.start_after = batch[-1].key
            self.checkpoint.add(dict(added))
            self._save()

    def _save(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._saved >= SAVE_EVERY:
            self.checkpoint.updated_at = time.time()
            self.store.save(self.checkpoint)
            self._saved = now

    def _finish(self, end: RunEnd) -> None:
        self.checkpoint.finished = end.completed and not self.more_left
        self._save(force=True)

    def _wait(self, progress: TransferProgress, runtime: LocalRuntime) -> None:
        from segflow_cli.localrun import finish_jobs

        before = dict(self.summary.counts)
        finish_jobs(runtime, self.summary, progress, timeout=self.args.timeout)
        # The checkpoint counts what became of the jobs too.
        self.checkpoint.add({k: v - before.get(k, 0) for k, v in self.summary.counts.items()})
        self._save(force=True)

    def _report(self, end: RunEnd) -> int:
        notes = self.summary.notes
        if end.refused is not None:
            self.summary.add(end.refused.results)  # handed over before the stop (sent again next run)
            notes.append(f"stopped: {end.refused.message}")
        if end.interrupted:
            notes.append("interrupted: run the same command to continue")
        if self.operation.via == "fc":
            notes.append(
                "FC runs them now; `segflow status` shows how they end (failures: `segflow redrive`)"
            )
        if self.summary.counts["submitted"] and (self.args.no_wait or self.operation.via != "local"):
            notes.append("video jobs are finished by the collector (segflow-collect-jobs)")
        where = "finished" if self.checkpoint.finished else f"stopped after {self.checkpoint.start_after!r}"
        notes.append(f"checkpoint: {self.store.where} ({where})")
        self.summary.print(as_json=self.args.json)
        if end.interrupted:
            return INTERRUPTED
        return 1 if end.refused is not None or self.summary.bad else 0
