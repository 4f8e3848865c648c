"""The engine on Function Compute keeps nothing on an instance (issue 17 §2), in-process with stub models.

GIVEN two engine instances built as `python -m segflow_engine.fc` builds them from FC's environment
      (`fcdeploy.build_server`), behind the loopback HTTP trigger (`authType: function`), FC's asynchronous
      invocation API and OSS (tests/support/fc_engine.py: each stand-in names the document it encodes)
WHEN  the functions' client, signing as `SEGFLOW_SIGNATURE_VERSION=fc-trigger`, calls them: an image, an
      upload through AuthorizeFileUpload, a video job, a PicWish task; and FC delivers a job again, or after
      a failure of the engine's bucket
THEN  any instance answers any request: results are presigned OSS links (30 minutes, as the service's),
      jobs and tasks are read from OSS by the other instance, uploads land in the engine's OSS prefix, a
      job runs inside FC's delivery and ends once, and no instance keeps a result or runs anything between
      requests.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from segflow.client import Endpoints, PicWishClient, VisionClient
from segflow.errors import StorageError
from segflow.retry import RetryPolicy
from segflow.storage.oss import OssStorage, auth_for
from segflow.tempupload import upload_input
from segflow_engine import fc
from segflow_engine.auth import EngineCredentials
from segflow_engine.fcdeploy import FcDeployment, build_server
from segflow_engine.server import EngineServer
from tests.support.engine_server import StubActions, make_mp4, make_png, png_size
from tests.support.fc_engine import BUCKET, CALLER, FcPlatform

RESULT_LINK_SECONDS = 30 * 60  # the service's result URLs are valid 30 minutes (VISION-API.md)


@pytest.fixture
def platform() -> Iterator[FcPlatform]:
    with FcPlatform() as running:
        yield running


@pytest.fixture
def stub() -> StubActions:
    return StubActions()


@pytest.fixture
def instances(platform: FcPlatform, stub: StubActions) -> Iterator[list[EngineServer]]:
    deployment = FcDeployment.from_env(platform.function_env())
    servers = [
        build_server(
            fc.parse_args(["--host", "127.0.0.1", "--port", "0"]), deployment, EngineCredentials.build(), stub
        )
        for _ in range(2)
    ]
    for server in servers:
        server.start()
    platform.serve([server.base_url for server in servers])
    yield servers
    for server in servers:
        server.shutdown()
    assert platform.trigger.errors == [] and platform.fc.errors == []


def _client(platform: FcPlatform) -> VisionClient:
    url = platform.trigger.base_url
    endpoints = Endpoints(imageseg=url, videoseg=url, openplatform=url)
    return VisionClient(
        CALLER, endpoints=endpoints, signature_version="fc-trigger", retry=RetryPolicy(max_attempts=1)
    )


def _user_storage(platform: FcPlatform) -> OssStorage:
    return OssStorage(BUCKET, platform.oss.endpoint, auth_for(CALLER))


def _input(platform: FcPlatform, key: str, data: bytes) -> str:
    """An object of the user's bucket as a presigned GET on the OSS endpoint (SEGFLOW_INPUT_URL=presign)."""
    storage = _user_storage(platform)
    storage.put_bytes(key, data)
    return storage.presign_get(key, 1800)


def test_an_image_result_is_a_presigned_oss_link_and_no_instance_keeps_it(
    platform: FcPlatform, instances: list[EngineServer]
) -> None:
    url = _input(platform, "incoming/photo.png", make_png(40, 30, channels=3))
    result = _client(platform).segment("SegmentCommonImage", url)
    assert result.image_url is not None
    link = urlsplit(result.image_url)
    assert f"{link.scheme}://{link.netloc}" == platform.oss.endpoint
    expires = int(parse_qs(link.query)["Expires"][0])
    assert abs(expires - (time.time() + RESULT_LINK_SECONDS)) < 60
    image = requests.get(result.image_url, timeout=10)
    assert image.status_code == 200 and png_size(image.content) == (40, 30)
    assert [key for key in platform.objects("results/") if key.endswith("/image.png")]
    for server in instances:
        assert server.engine.store is None and not (server.state_dir / "results").exists()


def test_requests_reach_both_instances_and_each_answers_them(
    platform: FcPlatform, instances: list[EngineServer]
) -> None:
    url = _input(platform, "incoming/photo.png", make_png(16, 16, channels=3))
    client = _client(platform)
    for _ in range(4):
        assert client.segment("SegmentCommodity", url).image_url
    assert {forwarded.instance for forwarded in platform.trigger.forwarded} == {s.base_url for s in instances}
    assert {f.fc_status for f in platform.trigger.forwarded} == {"200"}  # x-fc-status on every answer


def test_an_upload_lands_in_the_engines_prefix_and_is_read_from_there(
    platform: FcPlatform, instances: list[EngineServer], stub: StubActions
) -> None:
    """AuthorizeFileUpload grants a PostObject to `<prefix>temp/…` of the engine's bucket, signed with its
    role's STS key (the grant carries the token); the action reads the object through a presigned GET."""
    storage = _user_storage(platform)
    photo = make_png(24, 20, channels=3)
    storage.put_bytes("incoming/upload.png", photo)
    client = _client(platform)
    object_url = upload_input(
        client, storage, "incoming/upload.png", product="imageseg", region_id="cn-shanghai"
    )
    (stored_key,) = [key for key in platform.objects("temp/")]
    assert platform.objects("temp/")[stored_key] == photo
    assert object_url.endswith(stored_key)
    assert client.segment("SegmentCommonImage", object_url).image_url
    assert stub.calls[-1].input_size == len(photo)


def test_a_video_job_runs_inside_fcs_delivery_and_is_polled_on_the_other_instance(
    platform: FcPlatform, instances: list[EngineServer], stub: StubActions
) -> None:
    clip = make_mp4()
    client = _client(platform)
    job = client.segment("SegmentVideoBody", _input(platform, "incoming/clip.mp4", clip))
    assert job.job_id
    platform.fc.drain()
    (delivery,) = platform.fc.deliveries
    assert delivery.succeeded and delivery.fc_status == "200"
    polls = [client.get_async_job_result(job.job_id) for _ in range(2)]  # the trigger takes turns
    assert {p.status for p in polls} == {"PROCESS_SUCCESS"}
    assert len({f.instance for f in platform.trigger.forwarded[-2:]}) == 2
    video = requests.get(polls[0].result_url() or "", timeout=10)
    assert video.status_code == 200 and video.content == clip
    assert len(stub.calls) == 1


def test_a_job_delivered_again_after_it_ended_runs_nothing(
    platform: FcPlatform, instances: list[EngineServer], stub: StubActions
) -> None:
    client = _client(platform)
    job = client.segment("SegmentVideoBody", _input(platform, "incoming/clip.mp4", make_mp4()))
    platform.fc.drain()
    before = dict(platform.objects(f"jobs/{job.job_id}/"))
    for instance in instances:  # FC delivers at least once: the same event again, on each instance
        answer = requests.post(
            f"{instance.base_url}/invoke",
            data=f'{{"JobId": "{job.job_id}"}}',
            headers=platform.context.headers("R-AGAIN", "/invoke"),
            timeout=10,
        )
        assert answer.status_code == 200 and answer.headers["x-fc-status"] == "200"
    assert len(stub.calls) == 1 and platform.objects(f"jobs/{job.job_id}/") == before


def test_a_job_whose_bucket_failed_is_retried_by_fc_and_ends_once(
    platform: FcPlatform, instances: list[EngineServer], stub: StubActions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's own bucket failing (OSS 503) is the invocation failing (x-fc-status 404): FC retries the
    delivery ("Asynchronous invocations"), the next attempt runs the job and ends it, once."""
    failures = [StorageError("OSS answered 503", code="ServiceUnavailable", http_status=503)]
    render = stub.run_video_action

    def flaky(*args: object) -> None:
        if failures:
            raise failures.pop()
        render(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(stub, "run_video_action", flaky)
    client = _client(platform)
    job = client.segment("SegmentVideoBody", _input(platform, "incoming/clip.mp4", make_mp4()))
    platform.fc.drain()
    outcomes = [(d.succeeded, d.fc_status) for d in platform.fc.deliveries]
    assert outcomes == [(False, "404"), (True, "200")]
    assert len({d.instance for d in platform.fc.deliveries}) == 2
    ended = client.get_async_job_result(job.job_id or "")
    assert ended.status == "PROCESS_SUCCESS"
    assert set(platform.objects(f"jobs/{job.job_id}/")) == {
        f"jobs/{job.job_id}/{name}" for name in ("job.json", "processing.json", "result.json")
    }
    assert (
        b'"Attempt": 2'
        in platform.objects(f"jobs/{job.job_id}/result.json")[f"jobs/{job.job_id}/result.json"]
    )


def test_a_job_that_fails_on_its_input_ends_failed_without_retries(
    platform: FcPlatform, instances: list[EngineServer]
) -> None:
    client = _client(platform)
    missing = _user_storage(platform).presign_get("incoming/none.mp4", 1800)
    job = client.segment("SegmentVideoBody", missing)
    platform.fc.drain()
    assert [d.succeeded for d in platform.fc.deliveries] == [True]  # nothing a retry would change
    ended = client.get_async_job_result(job.job_id or "")
    assert (ended.status, ended.error_code) == ("PROCESS_FAILED", "InvalidFile.Download")


def test_a_picwish_task_is_read_back_on_the_other_instance(
    platform: FcPlatform, instances: list[EngineServer]
) -> None:
    url = _input(platform, "incoming/photo.png", make_png(20, 20, channels=3))
    task = requests.post(
        f"{instances[0].base_url}/tasks/visual/segmentation",
        data={"image_url": url},
        headers={"Authorization": "APPCODE behind-the-gateway"},
        timeout=10,
    ).json()["data"]
    assert task["state"] == 1
    again = requests.get(f"{instances[1].base_url}/tasks/visual/segmentation/{task['task_id']}", timeout=10)
    assert again.status_code == 200 and again.json()["data"]["image"] == task["image"]
    assert PicWishClient  # PicWish's own client cannot sign for a trigger with authType function


def test_an_input_on_a_private_address_is_refused_but_the_oss_endpoint_is_not(
    platform: FcPlatform, instances: list[EngineServer]
) -> None:
    """Beyond loopback the engine fetches public addresses only (issue 15 §3), except its OSS endpoint,
    which inside FC (`-internal`) resolves to a private address: here the loopback OSS stands in for it."""
    client = _client(platform)
    assert client.segment("SegmentCommonImage", _input(platform, "incoming/ok.png", make_png(8, 8))).image_url
    with pytest.raises(Exception) as refused:
        client.segment("SegmentCommonImage", f"{instances[0].base_url}/results/x/y.png")
    assert getattr(refused.value, "code", "") == "InvalidImage.Download"


def test_nothing_runs_between_requests(instances: list[EngineServer]) -> None:
    """FC may freeze an idle instance: no cleanup thread, no job thread outlives its answer."""
    names = {thread.name for thread in threading.enumerate()}
    assert "segflow-engine-cleanup" not in names
