"""The two handlers in this process, wired as `segflow run` wires them, for `backfill` / `redrive --local`.

The real `functions/*/index.py` are loaded by path and called with an FC-shaped context (s.yaml's names and
timeouts: `segflow_cli.invoke`) and the production `Deps` (`Deps.from_settings`): OSS or local-directory
buckets, whatever vision endpoints are configured; the vision client's process-wide limiter keeps every
thread of this process under `SEGFLOW_QPS`. Each record's outcome is read from its log line (`OutcomeLines`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from segflow.layout import BucketLayout
from segflow.services.deps import Deps, StorageFactory, use_handler_deps
from segflow.settings import Settings
from segflow.states import RecordState, RecordStates
from segflow.storage.base import Storage

if TYPE_CHECKING:
    from segflow_cli.progress import TransferProgress
    from segflow_cli.summary import RunSummary


class OutcomeLines(logging.Handler):
    """Keeps the outcome lines (`{"bucket", "key", "action", "outcome", …}`) per logging thread: the line
    the services log for each record (`segflow.logs.log_outcome`, what FC's log service shows) survives a
    handler that raises for a redelivery, whose own answer is lost."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._lines: dict[int, list[dict[str, Any]]] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if not text.startswith("{"):
            return
        try:
            fields = json.loads(text)
        except ValueError:
            return
        if isinstance(fields, dict) and "outcome" in fields:
            with self._guard:
                self._lines.setdefault(record.thread or 0, []).append(fields)

    def take(self) -> list[dict[str, Any]]:
        """The lines logged by the calling thread since its last `take`."""
        with self._guard:
            return self._lines.pop(threading.get_ident(), [])


class LocalRuntime:
    """on_upload and collect_jobs of one bucket, in this process."""

    def __init__(
        self,
        settings: Settings,
        bucket: str,
        storage_factory: StorageFactory | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        from segflow.logs import install_redaction
        from segflow_cli.fccontext import local_context
        from segflow_cli.invoke import DEPLOYED_NAMES, find_handler_file, load_handler

        install_redaction(settings.secret_values)
        self.settings = settings
        self.bucket = bucket
        self.on_upload = load_handler(find_handler_file("on_upload", None), "on_upload")
        self.collect_jobs = load_handler(find_handler_file("collect_jobs", None), "collect_jobs")
        self.deps = Deps.from_settings(
            settings,
            local_context(settings, DEPLOYED_NAMES["collect_jobs"]),
            storage_factory=storage_factory,
            buckets=(bucket,),
        )
        self.lines = OutcomeLines()
        self._logging = _capture(self.deps.logger, self.lines, verbose=verbose)
        use_handler_deps(self.deps)

    def _context(self, function: str) -> Any:
        """An FC-shaped context for one invocation of `function`, named and timed as s.yaml deploys it."""
        from segflow_cli.fccontext import local_context
        from segflow_cli.invoke import DEPLOYED_NAMES, TIMEOUTS

        return local_context(self.settings, DEPLOYED_NAMES[function], timeout=TIMEOUTS[function])

    @property
    def storage(self) -> Storage:
        return self.deps.storage_for(self.bucket)

    @property
    def layout(self) -> BucketLayout:
        return self.deps.layout

    def upload(self, payload: bytes) -> tuple[list[dict[str, Any]], BaseException | None]:
        """One delivery of an OSS event: the outcome lines of its records, and what it raised (FC would
        deliver it again), if anything."""
        self.lines.take()
        context = self._context("on_upload")
        try:
            self.on_upload(payload, context)
        except Exception as exc:  # the handler raises only for what a redelivery can fix
            return self.lines.take(), exc
        return self.lines.take(), None

    def collect(self) -> None:
        """One collector tick over the bucket, as the timer trigger would run it."""
        payload = json.dumps({"buckets": [self.bucket]})
        event = json.dumps({"triggerTime": "", "triggerName": "segflow-cli", "payload": payload})
        try:
            self.collect_jobs(event.encode(), self._context("collect_jobs"))
        finally:
            self.lines.take()

    def record_state(self, key: str, etag: str, action: str) -> RecordState | None:
        record = self.deps.records(self.storage).find(self.bucket, key, etag, action)
        return None if record is None else record.state

    def wait_for_jobs(
        self,
        pending: dict[str, tuple[str, str]],
        *,
        timeout: float,
        on_settled: Callable[[str, RecordState], None],
        poll_seconds: float = 1.0,
    ) -> None:
        """Run the collector until every pending object (key → (ETag, action)) is done or failed, or
        `timeout` seconds have passed; `on_settled` hears of each as it settles."""
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            self.collect()
            for key, (etag, action) in list(pending.items()):
                state = self.record_state(key, etag, action)
                if state is not None and state in RecordStates.FINAL:
                    del pending[key]
                    on_settled(key, state)
            if pending:
                time.sleep(poll_seconds)

    def close(self) -> None:
        use_handler_deps(None)
        self._logging()


def finish_jobs(
    runtime: LocalRuntime, summary: RunSummary, progress: TransferProgress, *, timeout: float
) -> None:
    """Run the collector until the video jobs of this run are done or failed (or `timeout`); what is still
    running then is counted `pending` (the deployed collector, if any, finishes it)."""
    pending = dict(summary.submitted)

    def settled(key: str, state: RecordState) -> None:
        after = state if state in (RecordStates.DONE, RecordStates.SUPERSEDED) else "failed"
        summary.settle(key, "submitted", after)
        progress.add(finished=1, failed=1 if after == "failed" else 0)

    runtime.wait_for_jobs(pending, timeout=timeout, on_settled=settled)
    for key in pending:
        summary.settle(key, "submitted", "pending", code="Timeout")


def _capture(logger: logging.Logger, handler: logging.Handler, *, verbose: bool) -> Callable[[], None]:
    """Route the services' log through `handler` (INFO and up); keep it off the console (the command
    prints its own summary) unless `verbose` or the console level (`segflow_cli.logsetup`) shows INFO.
    Returns the undo."""
    saved = (logger.level, logger.propagate)
    console = logger.getEffectiveLevel()
    logger.addHandler(handler)
    logger.setLevel(min(logging.INFO, console))
    logger.propagate = verbose or console <= logging.INFO

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]

    return restore
