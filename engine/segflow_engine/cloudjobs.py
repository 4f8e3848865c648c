"""Asynchronous jobs of the engine on Function Compute: kept in OSS, queued as FC asynchronous invocations of
the engine itself, run inside the invocation that delivers them.

    <prefix>jobs/<job id>/job.json         the call (action, parameters), written once when it is submitted
    <prefix>jobs/<job id>/processing.json  the latest attempt (its number and start), rewritten by each
    <prefix>jobs/<job id>/result.json      how it ended, written once (put-if-absent): the first attempt
                                           to finish wins, a later one keeps nothing

Submitting (SegmentVideoBody and its siblings, SegmentBody with Async=true) writes job.json and asks FC to
invoke the function asynchronously with `{"JobId": …}` (`segflow_engine.fcinvoke`); the answer is the
JobId. FC delivers that payload to any instance as `POST /invoke`, where `run` does the whole job and
answers only when it ended: no work is left running after an answer, and an instance FC freezes or stops
holds nothing the job needs. GetAsyncJobResult, on any instance, reads the three objects.

- An instance that dies mid-job never answers its delivery: FC retries it (`asyncInvokeConfig`, 3 retries
  by default) on an instance that runs the job again from its input; the job ends once, with one result.
- A delivery of a job that has ended (FC redelivers: at least once) finds result.json and does nothing.
- A failure of the engine's own bucket (OSS unreachable, 5xx) is answered as a failed invocation, so FC
  retries it; anything else the job raises ends it, as the service ends a job: PROCESS_FAILED with the code.
- A job FC gave up on (every delivery died) or never delivered shows PROCESSING or QUEUING until
  `stale_seconds` after its last start (the function's timeout) or submission (FC's event age), then
  TIMEOUT_FAILED, a status the service has too: a poller never waits forever.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from segflow.errors import ObjectExistsError, SegflowError, StorageError
from segflow_engine.backends import Job, JobRunner
from segflow_engine.cloud import EngineBucket
from segflow_engine.jobs import PROCESS_FAILED, PROCESS_SUCCESS, PROCESSING, QUEUING, JobState

LOG = logging.getLogger("segflow_engine.jobs")

TIMEOUT_FAILED = "TIMEOUT_FAILED"
JOB_SECONDS = 1800 + 60  # s.yaml's `timeout` of the engine function, and a minute's slack
EVENT_AGE_SECONDS = 86400  # s.yaml's `maxAsyncEventAgeInSeconds`: FC drops an older event
_JOB_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")


class AsyncInvoker(Protocol):
    def invoke(self, payload: bytes) -> str: ...


class CloudJobs:
    """The jobs of one engine bucket."""

    def __init__(
        self,
        bucket: EngineBucket,
        invoker: AsyncInvoker,
        *,
        clock: Callable[[], float] = time.time,
        job_seconds: float = JOB_SECONDS,
        event_age_seconds: float = EVENT_AGE_SECONDS,
    ) -> None:
        self._bucket = bucket
        self._invoker = invoker
        self._clock = clock
        self._job_seconds = job_seconds
        self._event_age_seconds = event_age_seconds

    def _key(self, job_id: str, name: str) -> str:
        return self._bucket.key("jobs", job_id, name)

    # -- the API side ----------------------------------------------------------------------------------
    def submit(self, job_id: str, job: Job) -> None:
        document = {"JobId": job_id, "Action": job.action, "Params": job.params, "SubmittedAt": self._clock()}
        self._bucket.put_json(self._key(job_id, "job.json"), document, if_absent=True)
        try:
            self._invoker.invoke(json.dumps({"JobId": job_id}).encode("utf-8"))
        except BaseException:
            self._bucket.storage().delete(self._key(job_id, "job.json"))  # nobody polls a refused call
            raise

    def state(self, job_id: str) -> JobState | None:
        """What GetAsyncJobResult reports, from OSS; None for a job this engine does not know."""
        if not _JOB_ID.match(job_id):
            return None
        ended = self._bucket.get_json(self._key(job_id, "result.json"))
        if ended is not None:
            return _ended_state(job_id, ended)
        started = self._bucket.get_json(self._key(job_id, "processing.json"))
        if started is not None:
            stale = self._clock() - float(started.get("StartedAt", 0)) > self._job_seconds
            return _timed_out(job_id) if stale else JobState(job_id, PROCESSING)
        submitted = self._bucket.get_json(self._key(job_id, "job.json"))
        if submitted is None:
            return None
        stale = self._clock() - float(submitted.get("SubmittedAt", 0)) > self._event_age_seconds
        return _timed_out(job_id) if stale else JobState(job_id, QUEUING)

    # -- the invocation side ---------------------------------------------------------------------------
    def run(self, payload: bytes, runner: JobRunner, error_code: Callable[[str], str]) -> str:
        """Run the job an asynchronous invocation delivers (`POST /invoke`), to its end; returns what
        happened. Raises (FC then retries the delivery) only when the engine's own bucket failed."""
        job_id = _job_id_of(payload)
        if job_id is None:
            LOG.error("an invocation without a JobId: nothing to run (%d bytes)", len(payload))
            return "ignored"
        if self._bucket.get_json(self._key(job_id, "result.json")) is not None:
            LOG.info("job %s has ended already: this delivery runs nothing", job_id)
            return "already-ended"
        submitted = self._bucket.get_json(self._key(job_id, "job.json"))
        if submitted is None:
            LOG.error("job %s is not in the bucket: nothing to run", job_id)
            return "unknown"
        job = Job(str(submitted.get("Action", "")), dict(submitted.get("Params") or {}))
        attempt = self._start(job_id)
        LOG.info("job %s (%s): attempt %d", job_id, job.action, attempt)
        return self._finish(job_id, attempt, self._outcome(job_id, job, runner, error_code))

    def _start(self, job_id: str) -> int:
        before = self._bucket.get_json(self._key(job_id, "processing.json")) or {}
        attempt = int(before.get("Attempt", 0)) + 1
        self._bucket.put_json(
            self._key(job_id, "processing.json"), {"Attempt": attempt, "StartedAt": self._clock()}
        )
        return attempt

    def _outcome(
        self, job_id: str, job: Job, runner: JobRunner, error_code: Callable[[str], str]
    ) -> dict[str, Any]:
        try:
            result = runner(job)
        except StorageError:
            raise  # the engine's bucket: FC retries the delivery
        except SegflowError as exc:
            return {"Status": PROCESS_FAILED, "ErrorCode": exc.code, "ErrorMessage": exc.message}
        except Exception as exc:
            LOG.exception("job %s failed", job_id)
            message = f"{type(exc).__name__}: {exc}"
            return {"Status": PROCESS_FAILED, "ErrorCode": error_code(job.action), "ErrorMessage": message}
        text = json.dumps(dict(result), ensure_ascii=False, separators=(",", ":"))
        return {"Status": PROCESS_SUCCESS, "Result": text}

    def _finish(self, job_id: str, attempt: int, outcome: dict[str, Any]) -> str:
        document = {**outcome, "Attempt": attempt, "FinishedAt": self._clock()}
        try:
            self._bucket.put_json(self._key(job_id, "result.json"), document, if_absent=True)
        except ObjectExistsError:
            LOG.info("job %s had ended on another instance meanwhile: this attempt is dropped", job_id)
            return "already-ended"
        LOG.info("job %s ended %s (attempt %d)", job_id, outcome["Status"], attempt)
        return str(outcome["Status"])


def _job_id_of(payload: bytes) -> str | None:
    try:
        document = json.loads(payload)
    except ValueError:
        return None
    job_id = document.get("JobId") if isinstance(document, Mapping) else None
    return job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None


def _ended_state(job_id: str, ended: Mapping[str, Any]) -> JobState:
    if ended.get("Status") == PROCESS_SUCCESS:
        return JobState(job_id, PROCESS_SUCCESS, result=str(ended.get("Result", "")))
    return JobState(
        job_id,
        PROCESS_FAILED,
        error_code=str(ended.get("ErrorCode") or "InternalServerError"),
        error_message=str(ended.get("ErrorMessage") or ""),
    )


def _timed_out(job_id: str) -> JobState:
    return JobState(
        job_id,
        TIMEOUT_FAILED,
        error_code=TIMEOUT_FAILED,
        error_message="the job did not end: every delivery of it stopped before it finished",
    )
