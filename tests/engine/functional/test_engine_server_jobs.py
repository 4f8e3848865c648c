"""Asynchronous calls: SegmentBody with Async=true and every videoseg action become jobs (VISION-API.md §2,
§3).

GIVEN an engine with one model worker and stub models the test can hold at a gate
WHEN  jobs are submitted and polled with GetAsyncJobResult
THEN  they go QUEUING → PROCESSING → PROCESS_SUCCESS (Result a JSON string in the service's shape) or
      PROCESS_FAILED with ErrorCode / ErrorMessage; the RequestId of the submission is the JobId.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from segflow.errors import InputValidationError
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_mp4,
    make_png,
    png_size,
    serve_files,
    start_engine,
)

VIDEOSEG = "2020-03-20"
IMAGESEG = "2019-12-30"


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(48, 40, channels=3), "clip.mp4": make_mp4()}) as served:
        yield served


@pytest.fixture
def stub() -> StubActions:
    return StubActions()


@pytest.fixture
def engine(stub: StubActions) -> Iterator[RunningEngine]:
    with start_engine(actions=stub, workers=1) as running:
        yield running


def _job_result(engine: RunningEngine, job_id: str, version: str = VIDEOSEG) -> dict[str, Any]:
    response = call_rpc(engine, "GetAsyncJobResult", {"JobId": job_id}, version=version)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["Data"]
    return data


def _wait_finished(engine: RunningEngine, job_id: str, version: str = VIDEOSEG) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        data = _job_result(engine, job_id, version)
        if data["Status"] in ("PROCESS_SUCCESS", "PROCESS_FAILED"):
            return data
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish")


def _submit(engine: RunningEngine, action: str, params: dict[str, str], version: str) -> str:
    response = call_rpc(engine, action, params, version=version)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["Data"] == {}
    job_id: str = body["RequestId"]
    return job_id


def test_async_segment_body_goes_queuing_processing_success(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    gate = stub.hold()
    first = _submit(engine, "SegmentBody", {"ImageURL": files.url("photo.png"), "Async": "true"}, IMAGESEG)
    assert stub.started.wait(10)
    second = _submit(engine, "SegmentBody", {"ImageURL": files.url("photo.png"), "Async": "true"}, IMAGESEG)

    running = _job_result(engine, first, IMAGESEG)
    waiting = _job_result(engine, second, IMAGESEG)
    assert (running["JobId"], running["Status"]) == (first, "PROCESSING")
    assert (waiting["JobId"], waiting["Status"]) == (second, "QUEUING")
    assert "Result" not in running

    gate.set()
    done = _wait_finished(engine, first, IMAGESEG)
    assert done["Status"] == "PROCESS_SUCCESS"
    assert isinstance(done["Result"], str)
    result = json.loads(done["Result"])
    assert set(result) == {"ImageURL"}
    assert png_size(requests.get(result["ImageURL"], timeout=10).content) == (48, 40)
    assert _wait_finished(engine, second, IMAGESEG)["Status"] == "PROCESS_SUCCESS"


def test_sync_segment_body_is_answered_at_once_while_a_job_runs(files: LoopbackFiles) -> None:
    # The server stays responsive: polls are answered while the only model worker is busy.
    stub = StubActions()
    with start_engine(actions=stub, workers=1) as engine:
        gate = stub.hold()
        job = _submit(engine, "SegmentBody", {"ImageURL": files.url("photo.png"), "Async": "true"}, IMAGESEG)
        assert stub.started.wait(10)
        started = time.monotonic()
        assert _job_result(engine, job, IMAGESEG)["Status"] == "PROCESSING"
        assert time.monotonic() - started < 2
        gate.set()
        assert _wait_finished(engine, job, IMAGESEG)["Status"] == "PROCESS_SUCCESS"


@pytest.mark.parametrize(
    ("action", "url_param"),
    [
        ("SegmentVideoBody", "VideoUrl"),
        ("SegmentHalfBody", "VideoUrl"),
        ("SegmentGreenScreenVideo", "VideoURL"),  # sic: upper-case URL, in the request and the Result
    ],
)
def test_video_job_result_names_the_video_like_the_service(
    engine: RunningEngine, files: LoopbackFiles, action: str, url_param: str
) -> None:
    job = _submit(engine, action, {url_param: files.url("clip.mp4")}, VIDEOSEG)
    done = _wait_finished(engine, job)
    assert done["Status"] == "PROCESS_SUCCESS", done
    result = json.loads(done["Result"])
    assert set(result) == {url_param}
    video = requests.get(result[url_param], timeout=10)
    assert video.status_code == 200
    assert video.headers["Content-Type"] == "video/mp4"
    assert video.content == files.files["clip.mp4"]  # the stub's "mask video" is its input


def test_failed_model_run_is_process_failed_with_the_error_code(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    stub.failure = InputValidationError("no person found", code="InvalidFile.Content")
    job = _submit(engine, "SegmentVideoBody", {"VideoUrl": files.url("clip.mp4")}, VIDEOSEG)
    done = _wait_finished(engine, job)
    assert done["Status"] == "PROCESS_FAILED"
    assert done["ErrorCode"] == "InvalidFile.Content"
    assert done["ErrorMessage"] == "no person found"
    assert "Result" not in done


def test_unexpected_model_crash_is_process_failed_internal(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    stub.failure = RuntimeError("decoder crashed")
    job = _submit(engine, "SegmentVideoBody", {"VideoUrl": files.url("clip.mp4")}, VIDEOSEG)
    done = _wait_finished(engine, job)
    assert done["Status"] == "PROCESS_FAILED"
    assert done["ErrorCode"] == "InternalServerError.Algo"
    assert "decoder crashed" in done["ErrorMessage"]


def test_video_that_cannot_be_downloaded_fails_the_job_with_invalid_file_download(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    job = _submit(engine, "SegmentVideoBody", {"VideoUrl": files.url("missing.mp4")}, VIDEOSEG)
    done = _wait_finished(engine, job)
    assert (done["Status"], done["ErrorCode"]) == ("PROCESS_FAILED", "InvalidFile.Download")
    assert stub.calls == []


def test_image_given_to_a_video_action_fails_the_job_with_invalid_file_type(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    job = _submit(engine, "SegmentVideoBody", {"VideoUrl": files.url("photo.png")}, VIDEOSEG)
    done = _wait_finished(engine, job)
    assert (done["Status"], done["ErrorCode"]) == ("PROCESS_FAILED", "InvalidFile.Type")


def test_unknown_job_id_is_invalid_parameter(engine: RunningEngine) -> None:
    response = call_rpc(
        engine, "GetAsyncJobResult", {"JobId": "E75FE679-0303-4DD1-8252-1143B4FA8A27"}, version=VIDEOSEG
    )
    assert response.status_code == 400
    assert response.json()["Code"] == "InvalidParameter"


def test_get_async_job_result_without_job_id_is_missing_parameter(engine: RunningEngine) -> None:
    response = call_rpc(engine, "GetAsyncJobResult", {}, version=VIDEOSEG)
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingParameter"


def test_job_result_in_xml_keeps_result_as_a_string(engine: RunningEngine, files: LoopbackFiles) -> None:
    import xml.etree.ElementTree as ET

    job = _submit(engine, "SegmentVideoBody", {"VideoUrl": files.url("clip.mp4")}, VIDEOSEG)
    _wait_finished(engine, job)
    response = call_rpc(engine, "GetAsyncJobResult", {"JobId": job, "Format": "XML"}, version=VIDEOSEG)
    root = ET.fromstring(response.content)
    assert root.tag == "GetAsyncJobResultResponse"
    assert root.findtext("Data/Status") == "PROCESS_SUCCESS"
    assert "VideoUrl" in json.loads(root.findtext("Data/Result") or "{}")


def test_shutdown_lets_a_running_job_finish(files: LoopbackFiles) -> None:
    stub = StubActions()
    engine = start_engine(actions=stub, workers=1)
    gate = stub.hold()
    job = _submit(engine, "SegmentBody", {"ImageURL": files.url("photo.png"), "Async": "true"}, IMAGESEG)
    assert stub.started.wait(10)
    pool = engine.server.engine.pool
    gate.set()
    engine.stop()
    state = pool.get(job)
    assert state is not None and state.status == "PROCESS_SUCCESS"


def test_failed_video_job_leaves_no_result_files(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    stub.failure = RuntimeError("encoder failed")
    job = _submit(engine, "SegmentVideoBody", {"VideoUrl": files.url("clip.mp4")}, VIDEOSEG)
    assert _wait_finished(engine, job)["Status"] == "PROCESS_FAILED"
    results_dir = engine.server.engine.store.root
    assert list(results_dir.iterdir()) == []
