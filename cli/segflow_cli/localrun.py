"""The two handlers in this process, wired as `segflow run` wires them, for `backfill` / `redrive --local`.

The real `functions/on_upload/index.py` and `functions/collect_jobs/index.py` are loaded by path and
called with an FC-shaped context (`fccontext.local_context`, the timeouts of s.yaml); their `Deps` are the
production ones (`Deps.from_settings`): OSS through oss2 with the environment's keys, or local-directory
buckets, and whatever vision endpoints are configured. The vision client's process-wide limiter keeps
every thread of this process under `SEGFLOW_QPS`.

Each record's outcome is read from the JSON line the services log for it (`segflow.logs.log_outcome`,
what FC's log service shows), kept per calling thread by `OutcomeLines`; the handler's own answer is lost
when it raises for a redelivery, the lines are not.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from segflow.layout import BucketLayout
from segflow.records import record_id_for
from segflow.services.deps import Deps, StorageFactory, use_handler_deps
from segflow.settings import Settings
from segflow.states import RecordState, RecordStates
from segflow.storage.base import Storage

if TYPE_CHECKING:
    from segflow_cli.progress import TransferProgress
    from segflow_cli.summary import RunSummary

ON_UPLOAD_TIMEOUT = 300  # s.yaml's on-upload timeout: the handler takes its deadline from it
COLLECT_TIMEOUT = 120  # s.yaml's collect-jobs timeout


class OutcomeLines(logging.Handler):
    """Keeps the outcome lines (`{"bucket", "key", "action", "outcome", …}`) per logging thread."""

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
        from segflow_cli.invoke import find_handler_file, load_handler

        install_redaction(settings.secret_values)
        self.settings = settings
        self.bucket = bucket
        self._context = local_context
        self.on_upload = load_handler(find_handler_file("on_upload", None), "on_upload")
        self.collect_jobs = load_handler(find_handler_file("collect_jobs", None), "collect_jobs")
        self.deps = Deps.from_settings(
            settings,
            local_context(settings, "segflow-collect-jobs"),
            storage_factory=storage_factory,
            buckets=(bucket,),
        )
        self.lines = OutcomeLines()
        self._logging = _capture(self.deps.logger, self.lines, verbose=verbose)
        use_handler_deps(self.deps)

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
        context = self._context(self.settings, "segflow-on-upload", timeout=ON_UPLOAD_TIMEOUT)
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
            self.collect_jobs(
                event.encode(), self._context(self.settings, "segflow-collect-jobs", timeout=COLLECT_TIMEOUT)
            )
        finally:
            self.lines.take()

    def record_state(self, key: str, etag: str, action: str) -> RecordState | None:
        record = self.deps.records(self.storage).load(record_id_for(self.bucket, key, etag, action))
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
