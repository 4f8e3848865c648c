"""Asynchronous jobs of the engine on Function Compute, kept in OSS (`segflow_engine.cloudjobs`), without a
network: an in-memory bucket, a recording invoker, a clock.

GIVEN the jobs of one engine bucket
WHEN  a job is submitted, delivered (FC's asynchronous invocation, at least once), delivered twice at once,
      delivered with a malformed payload, or left without any delivery that ends
THEN  the call is queued once as `{"JobId": …}`, the first delivery to end writes the one result, later ones
      run nothing, a malformed event runs nothing (no retry can fix it), and a job nobody finishes reads
      TIMEOUT_FAILED after the function's timeout (FC: `timeout`) or FC's event age
      (`maxAsyncEventAgeInSeconds`), as the service ends a job it cannot finish.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import pytest

from segflow.errors import ApiError, InputValidationError
from segflow.signing import Credentials
from segflow_engine.backends import Job
from segflow_engine.cloud import EngineBucket, RoleKeys
from segflow_engine.cloudjobs import TIMEOUT_FAILED, CloudJobs
from tests.support.memory_storage import MemoryStorage

JOB = Job("SegmentVideoBody", {"VideoUrl": "https://oss.example/clip.mp4"})


class Invoker:
    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.refuse: ApiError | None = None

    def invoke(self, payload: bytes) -> str:
        if self.refuse is not None:
            raise self.refuse
        self.payloads.append(payload)
        return "FC-REQUEST"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def memory() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def invoker() -> Invoker:
    return Invoker()


@pytest.fixture
def jobs(memory: MemoryStorage, invoker: Invoker, clock: Clock) -> CloudJobs:
    keys = RoleKeys(Credentials("STS.Key", "secret", "token"))
    bucket = EngineBucket(
        "segflow-demo", "segflow-engine/", "http://oss.test", keys, storage_for=lambda k: memory
    )
    return CloudJobs(bucket, invoker, clock=clock, job_seconds=1800, event_age_seconds=86400)


def _ok(job: Job) -> Mapping[str, Any]:
    return {"VideoUrl": "https://oss.example/result.mp4"}


def _code(action: str) -> str:
    return "InternalServerError.Algo"


def test_a_submitted_job_is_queued_once_and_reads_queuing(jobs: CloudJobs, invoker: Invoker) -> None:
    jobs.submit("JOB-1", JOB)
    assert [json.loads(p) for p in invoker.payloads] == [{"JobId": "JOB-1"}]
    state = jobs.state("JOB-1")
    assert state is not None and state.status == "QUEUING"


def test_a_refused_queueing_leaves_no_job_behind(
    jobs: CloudJobs, invoker: Invoker, memory: MemoryStorage
) -> None:
    invoker.refuse = ApiError("no permission", code="AccessDenied", http_status=403)
    with pytest.raises(ApiError):
        jobs.submit("JOB-1", JOB)
    assert memory.objects == {} and jobs.state("JOB-1") is None


def test_the_delivery_runs_the_job_to_its_end(jobs: CloudJobs, invoker: Invoker) -> None:
    jobs.submit("JOB-1", JOB)
    assert jobs.run(invoker.payloads[0], _ok, _code) == "PROCESS_SUCCESS"
    state = jobs.state("JOB-1")
    assert state is not None and state.status == "PROCESS_SUCCESS"
    assert json.loads(state.result or "") == {"VideoUrl": "https://oss.example/result.mp4"}


def test_a_job_that_fails_on_its_input_ends_with_the_services_code(jobs: CloudJobs, invoker: Invoker) -> None:
    def refused(job: Job) -> Mapping[str, Any]:
        raise InputValidationError("could not download VideoUrl", code="InvalidFile.Download")

    jobs.submit("JOB-1", JOB)
    assert jobs.run(invoker.payloads[0], refused, _code) == "PROCESS_FAILED"
    state = jobs.state("JOB-1")
    assert state is not None and (state.error_code, state.status) == (
        "InvalidFile.Download",
        "PROCESS_FAILED",
    )


def test_a_model_that_breaks_ends_the_job_with_the_products_internal_error(
    jobs: CloudJobs, invoker: Invoker
) -> None:
    def broken(job: Job) -> Mapping[str, Any]:
        raise RuntimeError("the graph failed")

    jobs.submit("JOB-1", JOB)
    jobs.run(invoker.payloads[0], broken, _code)
    state = jobs.state("JOB-1")
    assert state is not None and state.error_code == "InternalServerError.Algo"
    assert "RuntimeError: the graph failed" in (state.error_message or "")


def test_a_delivery_after_the_end_runs_nothing(
    jobs: CloudJobs, invoker: Invoker, memory: MemoryStorage
) -> None:
    jobs.submit("JOB-1", JOB)
    jobs.run(invoker.payloads[0], _ok, _code)
    ran: list[Job] = []
    assert jobs.run(invoker.payloads[0], lambda job: ran.append(job) or {}, _code) == "already-ended"
    assert ran == [] and memory.writes["segflow-engine/jobs/JOB-1/result.json"] == 1


def test_two_deliveries_at_once_end_the_job_once(
    jobs: CloudJobs, invoker: Invoker, memory: MemoryStorage
) -> None:
    """FC may deliver an event twice: both run, the first to end writes the result, the other nothing."""
    jobs.submit("JOB-1", JOB)
    both_running = threading.Barrier(2, timeout=10)
    outcomes: list[str] = []

    def run() -> None:
        def slow(job: Job) -> Mapping[str, Any]:
            both_running.wait()
            return _ok(job)

        outcomes.append(jobs.run(invoker.payloads[0], slow, _code))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(outcomes) == ["PROCESS_SUCCESS", "already-ended"]
    assert memory.writes["segflow-engine/jobs/JOB-1/result.json"] == 1


@pytest.mark.parametrize("payload", [b"", b"not json", b'{"JobId": "../../x"}', b'{"Job": "JOB-1"}', b"[1]"])
def test_a_malformed_event_runs_nothing_and_is_not_retried(jobs: CloudJobs, payload: bytes) -> None:
    assert jobs.run(payload, _ok, _code) == "ignored"


def test_an_unknown_job_reads_as_none_and_runs_nothing(jobs: CloudJobs) -> None:
    assert jobs.state("NO-SUCH-JOB") is None and jobs.state("../x") is None
    assert jobs.run(b'{"JobId": "NO-SUCH-JOB"}', _ok, _code) == "unknown"


def test_a_job_every_delivery_of_which_died_times_out_after_the_functions_timeout(
    jobs: CloudJobs, invoker: Invoker, memory: MemoryStorage, clock: Clock
) -> None:
    jobs.submit("JOB-1", JOB)
    memory.put_bytes(
        "segflow-engine/jobs/JOB-1/processing.json",
        json.dumps({"Attempt": 4, "StartedAt": clock.now}).encode(),
    )
    state = jobs.state("JOB-1")
    assert state is not None and state.status == "PROCESSING"
    clock.now += 1801
    state = jobs.state("JOB-1")
    assert state is not None and (state.status, state.error_code) == (TIMEOUT_FAILED, TIMEOUT_FAILED)


def test_a_job_never_delivered_times_out_after_fcs_event_age(jobs: CloudJobs, clock: Clock) -> None:
    jobs.submit("JOB-1", JOB)
    clock.now += 86401
    state = jobs.state("JOB-1")
    assert state is not None and state.status == TIMEOUT_FAILED
