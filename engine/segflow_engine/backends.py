"""Where an engine keeps what outlives one request: result files, asynchronous jobs, PicWish tasks and the
temporary bucket's grants. The engine (`segflow_engine.app.Engine`) sees them only through the protocols
below, so one engine serves from either of two homes:

- this machine (`segflow engine`, `segflow run`): results in the state folder served by the engine itself
  (`resultstore`), jobs on its worker pool (`jobs`, `LocalJobs`), PicWish tasks in memory
  (`LocalTasks`), the temporary bucket in the state folder (`tempstore`);
- OSS (the engine on Function Compute, `segflow_engine.cloud`): every instance reads and writes the same
  prefix of a bucket, jobs are queued as asynchronous invocations of the function itself and run inside
  them, so any instance answers any request and none keeps work running after its answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from segflow_engine.jobs import JobState, WorkerPool


class StoredFile(Protocol):
    """A stored result file: the URL a caller downloads it from (expiring like the service's links)."""

    @property
    def url(self) -> str: ...


class Results(Protocol):
    """Where result files go (`resultstore.ResultStore` here, `cloud.OssResults` in OSS)."""

    def new_result_id(self) -> str: ...

    def put_bytes(
        self, name: str, data: bytes, *, ttl_seconds: int, result_id: str | None = None
    ) -> StoredFile: ...

    def put_file(
        self, name: str, source: Path, *, ttl_seconds: int, result_id: str | None = None
    ) -> StoredFile:
        """Takes `source` (a file the engine rendered) into the store; `source` is gone afterwards."""
        ...


class Job(NamedTuple):
    """An asynchronous call to run: the catalogue action and the call's parameters."""

    action: str
    params: dict[str, str]


JobRunner = Callable[[Job], Mapping[str, Any]]
"""Runs a job to its end on a model worker: the `Result` mapping, or raises (a `SegflowError` names the
code the job fails with)."""


class Jobs(Protocol):
    """Asynchronous jobs (video actions, SegmentBody with Async=true) and what GetAsyncJobResult reads."""

    def submit(self, job_id: str, job: Job) -> None: ...

    def state(self, job_id: str) -> JobState | None: ...


class Tasks(Protocol):
    """PicWish answers, kept for `GET /tasks/visual/segmentation/<task_id>` while their links live."""

    def remember(self, task_id: str, data: Mapping[str, Any]) -> None: ...

    def recall(self, task_id: str) -> dict[str, Any] | None: ...


class Uploads(Protocol):
    """The temporary bucket's side of `AuthorizeFileUpload`: the answer's fields for a verified call."""

    def authorize(self, params: Mapping[str, str]) -> dict[str, Any]: ...


class InputUrls(Protocol):
    """How the engine reads an input URL that names its own storage (the temporary bucket in OSS)."""

    def resolve(self, url: str) -> str:
        """The URL to download `url` from: a presigned one for the engine's own private objects, else
        `url` itself."""
        ...


class Backends(NamedTuple):
    """Every home of one engine's state (`segflow_engine.cloud.oss_backends` builds the OSS ones)."""

    results: Results
    jobs: Jobs
    tasks: Tasks
    uploads: Uploads
    inputs: InputUrls | None = None


class LocalJobs:
    """Jobs on this process's worker pool: QUEUING, PROCESSING and the outcome are kept in memory."""

    def __init__(self, pool: WorkerPool, runner: JobRunner, error_code: Callable[[str], str]) -> None:
        self._pool = pool
        self._runner = runner
        self._error_code = error_code

    def submit(self, job_id: str, job: Job) -> None:
        def work() -> Mapping[str, Any]:
            return self._runner(job)

        self._pool.submit_job(job_id, work, internal_error_code=self._error_code(job.action))

    def state(self, job_id: str) -> JobState | None:
        return self._pool.get(job_id)


class LocalTasks:
    """PicWish answers in memory, forgotten `ttl_seconds` after they were made (`cleanup`)."""

    def __init__(self, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._tasks: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def remember(self, task_id: str, data: Mapping[str, Any]) -> None:
        with self._lock:
            self._tasks[task_id] = (self._clock(), dict(data))

    def recall(self, task_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._tasks.get(task_id)
        return None if found is None else dict(found[1])

    def cleanup(self) -> int:
        cutoff = self._clock() - self._ttl
        with self._lock:
            old = [task_id for task_id, (made, _) in self._tasks.items() if made < cutoff]
            for task_id in old:
                del self._tasks[task_id]
        return len(old)
