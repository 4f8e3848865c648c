"""The proof of issue 17 §4: the engine's Function Compute package, run as FC runs it, serving segflow.

GIVEN the package built by `make engine-fc` (cut-out actions and SegmentGreenScreenVideo), unpacked as FC
      unpacks it, and two instances started by its `bootstrap` on Python 3.10 with nothing but the package,
      each with FC's environment (FC_FUNCTION_NAME, FC_REGION, FC_ACCOUNT_ID, the role's STS key in
      ALIBABA_CLOUD_*, SEGFLOW_ENGINE_PORT) and s.yaml's (SEGFLOW_ENGINE_AUTH=fc-gateway, the bucket and
      prefix); in front, the loopback HTTP trigger with `authType: function` (tests/support/fc_trigger.py) and
      FC's asynchronous invocation API (tests/support/fc_standin.py), which first call each instance's
      Initializer as FC does; behind, the loopback OSS (tests/support/oss_server.py), with real oss2
WHEN  the functions' role (an STS key the engine never sees) calls it, signing as
      `SEGFLOW_SIGNATURE_VERSION=fc-trigger` does: an image; a video job; a video job whose instance is
      killed while it reads its input; and the whole pipeline, `segflow invoke` of on_upload, collect_jobs
THEN  the image's result is fetched through the presigned URL it returned; the job submitted through one
      instance is polled through the other; the killed job is retried by FC on the other instance and ends
      once, done, and a later delivery of it runs nothing; the pipeline stores a cut-out and a video with
      their manifests.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from segflow.client import Endpoints, VisionClient
from segflow.retry import RetryPolicy
from segflow.storage.oss import OssStorage, auth_for
from segflow_cli.fcapi import FcClient
from segflow_cli.main import main as segflow
from segflow_cli.urlserver import stop_background_server
from tests.conftest import EVENTS_DIR
from tests.support.engine_package import Instance, start_instance
from tests.support.engine_server import make_mp4, png_size
from tests.support.fc_engine import BUCKET, CALLER, ENGINE_ROLE, FUNCTION, FcPlatform
from tests.support.services_harness import jpeg

pytestmark = [pytest.mark.slow, pytest.mark.engine]
VIDEO_ACTION = "SegmentGreenScreenVideo"


@contextlib.contextmanager
def _two_instances(code: Path) -> Iterator[tuple[FcPlatform, list[Instance]]]:
    with FcPlatform() as platform, contextlib.ExitStack() as stack:
        instances = [stack.enter_context(start_instance(code, platform.function_env())) for _ in range(2)]
        platform.serve([instance.url for instance in instances])
        yield platform, instances
        assert platform.trigger.errors == [] and platform.fc.errors == []


@pytest.fixture(scope="module")
def engine(engine_fc_code: Path) -> Iterator[tuple[FcPlatform, list[Instance]]]:
    with _two_instances(engine_fc_code) as running:
        yield running


def _client(platform: FcPlatform) -> VisionClient:
    url = platform.trigger.base_url
    endpoints = Endpoints(imageseg=url, videoseg=url, openplatform=url)
    return VisionClient(
        CALLER,
        endpoints=endpoints,
        signature_version="fc-trigger",
        retry=RetryPolicy(max_attempts=1),
        timeout=120,
    )


def _input(platform: FcPlatform, key: str, data: bytes) -> str:
    storage = OssStorage(BUCKET, platform.oss.endpoint, auth_for(CALLER))
    storage.put_bytes(key, data)
    return storage.presign_get(key, 1800)


def _poll(client: VisionClient, job_id: str, seconds: float = 120.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = client.get_async_job_result(job_id)
        if not result.is_pending:
            return result
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still pending after {seconds:g} s")


def test_an_image_on_one_instance_is_fetched_through_the_url_it_returned(
    engine: tuple[FcPlatform, list[Instance]],
) -> None:
    platform, instances = engine
    result = _client(platform).segment(
        "SegmentCommonImage", _input(platform, "incoming/photo.jpg", jpeg((96, 64)))
    )
    assert platform.trigger.forwarded[-1].instance in {i.url for i in instances}
    assert result.image_url is not None and result.image_url.startswith(platform.oss.endpoint)
    cutout = requests.get(result.image_url, timeout=30)
    assert cutout.status_code == 200 and png_size(cutout.content) == (96, 64)
    for instance in instances:
        assert "FC Invoke Start RequestId:" in instance.log() and "models loaded in" in instance.log()


def test_a_video_job_submitted_through_one_instance_is_polled_through_the_other(
    engine: tuple[FcPlatform, list[Instance]],
) -> None:
    platform, _ = engine
    client = _client(platform)
    job = client.segment(VIDEO_ACTION, _input(platform, "incoming/clip.mp4", make_mp4(160, 120, 12)))
    submitted_on = platform.trigger.forwarded[-1].instance
    ended = _poll(client, job.job_id or "")
    assert ended.status == "PROCESS_SUCCESS", ended
    answered_on = {
        f.instance for f in platform.trigger.forwarded if f.headers.get("x-acs-action") == "GetAsyncJobResult"
    }
    assert answered_on - {submitted_on}, "no poll reached the other instance"
    video = requests.get(ended.result_url() or "", timeout=30)
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"


def test_an_instance_killed_in_the_middle_of_a_video_job_ends_it_once_done(engine_fc_code: Path) -> None:
    with _two_instances(engine_fc_code) as (platform, instances):
        client = _client(platform)
        url = _input(platform, "incoming/long.mp4", make_mp4(160, 120, 12))
        held = platform.oss.hold("incoming/long.mp4")  # the job is reading its input when the instance dies
        job = client.segment(VIDEO_ACTION, url)
        assert held.waiting.wait(60), "the job never started reading its input"
        doomed = instances[0]  # FC's first delivery goes to the first instance (fc_standin: in turn)
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(10)
        held.release.set()
        ended = _poll(client, job.job_id or "")
        platform.fc.drain()
        assert ended.status == "PROCESS_SUCCESS", ended
        deliveries = platform.fc.deliveries
        assert [(d.instance, d.succeeded) for d in deliveries] == [
            (doomed.url, False),
            (instances[1].url, True),
        ]
        record = json.loads(
            platform.objects(f"jobs/{job.job_id}/result.json")[f"jobs/{job.job_id}/result.json"]
        )
        assert record["Attempt"] == 2
        results = set(platform.objects("results/"))
        with FcClient(ENGINE_ROLE, platform.fc.url) as fc:  # FC delivers at least once: the event again
            fc.invoke(FUNCTION, json.dumps({"JobId": job.job_id}).encode(), asynchronous=True)
        platform.fc.drain()
        assert platform.fc.deliveries[-1].succeeded and set(platform.objects("results/")) == results
        assert "has ended already: this delivery runs nothing" in instances[1].log()


def test_the_whole_pipeline_runs_on_the_two_instances_signed_for_the_trigger(
    engine: tuple[FcPlatform, list[Instance]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`segflow invoke` runs the real handlers; inputs reach the engine through AuthorizeFileUpload, a
    PostObject into the engine's OSS prefix (SEGFLOW_INPUT_URL=upload, the default)."""
    platform, _ = engine
    environment = {
        "SEGFLOW_IMAGESEG_ENDPOINT": platform.trigger.base_url,
        "SEGFLOW_VIDEOSEG_ENDPOINT": platform.trigger.base_url,
        "SEGFLOW_SIGNATURE_VERSION": "fc-trigger",
        "SEGFLOW_RULES": json.dumps([{"media": "video", "action": VIDEO_ACTION}]),
        "ALIBABA_CLOUD_ACCESS_KEY_ID": CALLER.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": CALLER.access_key_secret,
        "ALIBABA_CLOUD_SECURITY_TOKEN": CALLER.security_token or "",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    for name in ("SEGFLOW_LOCAL_BUCKET_DIR", "SEGFLOW_INPUT_URL", "SEGFLOW_OPENPLATFORM_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    bucket = tmp_path / BUCKET
    (bucket / "incoming/photos").mkdir(parents=True)
    (bucket / "incoming/videos").mkdir(parents=True)
    (bucket / "incoming/photos/person-001.jpg").write_bytes(jpeg((120, 90)))
    (bucket / "incoming/videos/dance-720p.mp4").write_bytes(make_mp4(160, 120, 12))
    try:
        for function, event in (
            ("on_upload", "oss-put-image.json"),
            ("on_upload", "oss-put-video.json"),
        ):
            assert segflow(["invoke", function, str(EVENTS_DIR / event), "--bucket-dir", str(tmp_path)]) == 0
            print(capsys.readouterr().out)
        platform.fc.drain()  # the video job ran inside its asynchronous invocation
        assert (
            segflow(["invoke", "collect_jobs", str(EVENTS_DIR / "timer.json"), "--bucket-dir", str(tmp_path)])
            == 0
        )
    finally:
        stop_background_server(tmp_path)
    stored = sorted(
        p.relative_to(bucket).as_posix() for p in (bucket / "segmented").rglob("*") if p.is_file()
    )
    photo = "segmented/incoming/photos/person-001.jpg/SegmentCommonImage/"
    video = f"segmented/incoming/videos/dance-720p.mp4/{VIDEO_ACTION}/"
    assert {
        f"{photo}cutout.png",
        f"{photo}manifest.json",
        f"{video}result.mp4",
        f"{video}manifest.json",
    } <= set(stored)
    assert png_size((bucket / photo / "cutout.png").read_bytes()) == (120, 90)
    assert len(platform.objects("temp/")) == 2  # both inputs went through the engine's temporary prefix
