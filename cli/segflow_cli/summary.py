"""What `backfill` and `redrive` print at the end: counts per outcome, the failures, what to do next."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from segflow_cli.senders import ObjectResult

SHOWN_FAILURES = 20
KEPT_FAILURES = 10_000
BAD_OUTCOMES = frozenset({"failed", "fault", "unfinished", "pending"})
FINISHED_OUTCOMES = frozenset({"done", "failed", "fault", "skipped", "already-done", "superseded"})


@dataclass
class RunSummary:
    """Counts of a run and the first failures (thread-safe adds)."""

    command: str
    bucket: str
    via: str
    counts: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    failures: list[ObjectResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    submitted: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Objects whose asynchronous job is queued: key → (ETag, action), to wait for."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, results: Iterable[ObjectResult]) -> Counter[str]:
        added: Counter[str] = Counter()
        with self._lock:
            for result in results:
                added[result.outcome] += 1
                if result.action:
                    self.actions[result.action] += 1
                if result.outcome in BAD_OUTCOMES and len(self.failures) < KEPT_FAILURES:
                    self.failures.append(result)
                if result.outcome == "submitted" and result.action and result.etag:
                    self.submitted[result.key] = (result.etag, result.action)
            self.counts.update(added)
        return added

    def settle(self, key: str, before: str, after: str, code: str | None = None) -> None:
        """An object moved on after the run had counted it (a video job finished)."""
        with self._lock:
            self.counts[before] -= 1
            self.counts[after] += 1
            if after in BAD_OUTCOMES and len(self.failures) < KEPT_FAILURES:
                self.failures.append(ObjectResult(key, after, code=code))

    @property
    def bad(self) -> int:
        return sum(self.counts[o] for o in BAD_OUTCOMES)

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "bucket": self.bucket,
            "via": self.via,
            "counts": {k: v for k, v in sorted(self.counts.items()) if v},
            "actions": dict(sorted(self.actions.items())),
            "failures": [r._asdict() for r in self.failures],
            "notes": list(self.notes),
        }

    def print(self, *, as_json: bool) -> None:
        if as_json:
            print(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
            return
        counted = ", ".join(f"{v:,} {k}" for k, v in sorted(self.counts.items()) if v) or "nothing"
        print(f"segflow {self.command} {self.bucket} ({self.via}): {counted}")
        if self.actions:
            print("  by action: " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.actions.items())))
        _print_failures(self.failures)
        for note in self.notes:
            print(f"  {note}")


def _print_failures(failures: Sequence[ObjectResult]) -> None:
    for result in failures[:SHOWN_FAILURES]:
        reason = " ".join(str(p) for p in (result.code, result.detail) if p)
        print(f"  {result.outcome:<10} {result.key}  {reason}".rstrip())
    if len(failures) > SHOWN_FAILURES:
        print(f"  … and {len(failures) - SHOWN_FAILURES:,} more (--json lists them)")
