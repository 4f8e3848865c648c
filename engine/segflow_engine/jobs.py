"""The engine's worker pool: model work runs here, so the HTTP threads stay free to answer.

Synchronous calls hand their model work to the pool and wait (`WorkerPool.run`); asynchronous calls
(SegmentBody with `Async=true`, every videoseg action) become jobs (`WorkerPool.submit_job`), whose
`JobState` GetAsyncJobResult reports as the service does. Finished jobs are forgotten after
`job_ttl_seconds`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from segflow.errors import SegflowError

# GetAsyncJobResult's statuses: QUEUING until a worker takes the job, PROCESSING while it runs, then
# PROCESS_SUCCESS with `Result` (a JSON *string*, e.g. `{"VideoUrl": "..."}`) or PROCESS_FAILED with
# `ErrorCode` / `ErrorMessage`.
QUEUING = "QUEUING"
PROCESSING = "PROCESSING"
PROCESS_SUCCESS = "PROCESS_SUCCESS"
PROCESS_FAILED = "PROCESS_FAILED"
FINISHED = frozenset({PROCESS_SUCCESS, PROCESS_FAILED})

T = TypeVar("T")
LOG = logging.getLogger("segflow_engine.jobs")


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str
    result: str | None = None  # JSON text, as the service returns it
    error_code: str | None = None
    error_message: str | None = None
    created_at: float = 0.0
    finished_at: float | None = None

    def to_data(self) -> dict[str, Any]:
        """`Data` of a GetAsyncJobResult answer."""
        data: dict[str, Any] = {"JobId": self.job_id, "Status": self.status}
        if self.result is not None:
            data["Result"] = self.result
        if self.error_code is not None:
            data["ErrorCode"] = self.error_code
            data["ErrorMessage"] = self.error_message or ""
        return data


JobWork = Callable[[], Mapping[str, Any]]


class WorkerPool:
    """A fixed number of model workers shared by synchronous calls and asynchronous jobs."""

    def __init__(
        self,
        workers: int,
        *,
        job_ttl_seconds: float = 3600.0,
        max_finished_jobs: int = 10_000,
        clock: Callable[[], float] = time.time,
        internal_error_code: str = "InternalError.Algo",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segflow-engine-worker")
        self._lock = threading.Lock()
        self._jobs: dict[str, JobState] = {}
        self._futures: dict[str, Future[None]] = {}
        self._job_ttl = job_ttl_seconds
        self._max_finished = max_finished_jobs
        self._clock = clock
        self._internal_error_code = internal_error_code
        self._closed = False

    # -- synchronous work --------------------------------------------------------------------------
    def run(self, work: Callable[[], T], timeout: float | None = None) -> T:
        """Runs `work` on a model worker and returns its result (or raises its exception)."""
        future = self._executor.submit(work)
        return future.result(timeout=timeout)

    # -- jobs ----------------------------------------------------------------------------------------
    def submit_job(self, job_id: str, work: JobWork, *, internal_error_code: str | None = None) -> JobState:
        """Queues `work`; it must return the `Result` mapping or raise (a `SegflowError` names the code)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the worker pool is shut down")
            if job_id in self._jobs:
                raise ValueError(f"job {job_id} exists")
            state = JobState(job_id, QUEUING, created_at=self._clock())
            self._jobs[job_id] = state
        error_code = internal_error_code or self._internal_error_code
        future = self._executor.submit(self._run_job, job_id, work, error_code)
        with self._lock:
            self._futures[job_id] = future

        def forget(_done: Future[None]) -> None:
            self._forget_future(job_id)

        future.add_done_callback(forget)
        return state

    def get(self, job_id: str) -> JobState | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout: float) -> JobState | None:
        """Blocks until the job finished or `timeout` passed (used by tests and the CLI, not by the API)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.get(job_id)
            if state is None or state.status in FINISHED or time.monotonic() >= deadline:
                return state
            time.sleep(0.01)

    def _run_job(self, job_id: str, work: JobWork, error_code: str) -> None:
        self._update(job_id, status=PROCESSING)
        try:
            result = work()
            text = json.dumps(dict(result), ensure_ascii=False, separators=(",", ":"))
        except SegflowError as exc:
            self._finish(job_id, error_code=exc.code, error_message=exc.message)
        except Exception as exc:
            LOG.exception("job %s failed", job_id)
            self._finish(job_id, error_code=error_code, error_message=f"{type(exc).__name__}: {exc}")
        else:
            self._finish(job_id, result=text)

    def _finish(
        self,
        job_id: str,
        *,
        result: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> None:
        status = PROCESS_FAILED if error_code else PROCESS_SUCCESS
        self._update(
            job_id,
            status=status,
            result=result,
            error_code=error_code,
            error_message=error_message,
            finished_at=self._clock(),
        )

    def _update(self, job_id: str, **changes: Any) -> None:
        with self._lock:
            state = self._jobs.get(job_id)
            if state is not None:
                self._jobs[job_id] = replace(state, **changes)

    def _forget_future(self, job_id: str) -> None:
        with self._lock:
            self._futures.pop(job_id, None)

    # -- housekeeping --------------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Forgets finished jobs older than the TTL, and the oldest ones beyond `max_finished_jobs`."""
        now = self._clock()
        with self._lock:
            finished = [s for s in self._jobs.values() if s.status in FINISHED]
            old = {s.job_id for s in finished if (s.finished_at or now) + self._job_ttl < now}
            remaining = sorted((s for s in finished if s.job_id not in old), key=lambda s: s.finished_at or 0)
            overflow = len(remaining) - self._max_finished
            if overflow > 0:
                old.update(s.job_id for s in remaining[:overflow])
            for job_id in old:
                del self._jobs[job_id]
        return len(old)

    def shutdown(self, *, wait: bool = True) -> None:
        """Stops taking work; queued jobs are cancelled, running ones finish when `wait` is true."""
        with self._lock:
            self._closed = True
            queued = [jid for jid, future in self._futures.items() if not future.running()]
        self._executor.shutdown(wait=wait, cancel_futures=True)
        for job_id in queued:
            state = self.get(job_id)
            if state is not None and state.status == QUEUING:
                self._finish(
                    job_id, error_code="InternalServerError.Busy", error_message="the engine stopped"
                )
