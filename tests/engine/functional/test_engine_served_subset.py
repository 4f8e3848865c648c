"""An engine that serves some actions only (a Function Compute package built with `--actions cutout`).

GIVEN the engine over loopback, restricted to the cut-out actions (models stubbed: protocol only)
WHEN  the official SDK, segflow's own client and a plain signed call ask for a served and an unserved action
THEN  the served one is answered; the other is refused 403 `InvalidApi.NotPurchase` (the service's code for
      an API the caller cannot use, VISION-API.md §2) in the service's error shape, PicWish as the API
      Market refuses (401), before the input is fetched, and segflow's pipeline takes it for a deployment
      fault.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from segflow.client import Endpoints, PicWishClient, VisionClient
from segflow.errors import ApiError
from segflow.failure_policy import Decisions, decide
from segflow.retry import RetryPolicy
from segflow_engine import served
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    call_rpc,
    make_png,
    serve_files,
)

CUTOUT = frozenset(served.GROUPS["cutout"])


@pytest.fixture(autouse=True)
def cutout_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(served, "served_actions", lambda: CUTOUT)


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(64, 48, channels=3)}) as running:
        yield running


@pytest.mark.parametrize(("signature", "method"), [("v1", "GET"), ("v3", "POST")])
def test_an_unserved_action_is_refused_with_the_services_error_shape(
    engine: RunningEngine, files: LoopbackFiles, signature: str, method: str
) -> None:
    response = call_rpc(
        engine, "SegmentBody", {"ImageURL": files.url("photo.png")}, signature=signature, method=method
    )
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"RequestId", "HostId", "Code", "Message"}
    assert body["Code"] == "InvalidApi.NotPurchase"
    assert "does not serve SegmentBody" in body["Message"]


def test_the_refusal_comes_before_the_input_is_fetched(engine: RunningEngine, files: LoopbackFiles) -> None:
    before = list(files.requests)
    response = call_rpc(engine, "SegmentHead", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 403
    assert files.requests == before


def test_a_served_action_is_answered(engine: RunningEngine, files: LoopbackFiles) -> None:
    response = call_rpc(engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 200, response.text
    assert response.json()["Data"]["ImageURL"]


def test_a_video_job_of_an_unserved_action_is_never_queued(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    url = files.url("photo.png")
    response = call_rpc(engine, "SegmentVideoBody", {"VideoUrl": url}, version="2020-03-20")
    assert (response.status_code, response.json()["Code"]) == (403, "InvalidApi.NotPurchase")


def test_the_official_client_sees_the_services_code(engine: RunningEngine, files: LoopbackFiles) -> None:
    from alibabacloud_imageseg20191230 import models
    from alibabacloud_imageseg20191230.client import Client
    from alibabacloud_tea_openapi.models import Config

    config: Any = Config(
        access_key_id=engine.access_key_id,
        access_key_secret=engine.access_key_secret,
        endpoint=engine.endpoint,
        protocol="http",
        region_id="cn-shanghai",
    )
    with pytest.raises(Exception) as refused:
        Client(config).segment_body(models.SegmentBodyRequest(image_url=files.url("photo.png")))
    assert getattr(refused.value, "code", None) == "InvalidApi.NotPurchase"
    assert getattr(refused.value, "status_code", None) == 403


def test_segflows_pipeline_takes_it_for_a_deployment_fault(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    endpoints = Endpoints(imageseg=engine.base_url, videoseg=engine.base_url, openplatform=engine.base_url)
    client = VisionClient(engine.credentials, endpoints=endpoints, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ApiError) as refused:
        client.segment("SegmentBody", files.url("photo.png"))
    assert (refused.value.code, refused.value.http_status) == ("InvalidApi.NotPurchase", 403)
    assert decide(refused.value) == Decisions.FAULT
    assert client.segment("SegmentFurniture", files.url("photo.png")).raw


def test_an_unserved_picwish_is_refused_as_the_api_market_refuses_an_appcode(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    """PicWish documents HTTP 400/401/404/413/429/500 (VISION-API.md §4): an AppCode that may not call the
    API is the gateway's 401 with `X-Ca-Error-Message`, answered before anything is fetched."""
    before = list(files.requests)
    client = PicWishClient(engine.appcode, endpoint=engine.base_url, retry=RetryPolicy(max_attempts=1))
    with pytest.raises(ApiError) as refused:
        client.segment(files.url("photo.png"))
    assert (refused.value.code, refused.value.http_status) == ("PicWish.Unauthorized", 401)
    assert "does not serve PicWish" in refused.value.message
    assert decide(refused.value) == Decisions.FAULT  # the upload waits for a package with PicWish
    assert files.requests == before
    response = requests.post(
        f"{engine.base_url}/tasks/visual/segmentation",
        data={"image_url": files.url("photo.png")},
        headers={"Authorization": f"APPCODE {engine.appcode}"},
        timeout=10,
    )
    assert response.status_code == 401 and "does not serve PicWish" in response.headers["X-Ca-Error-Message"]
