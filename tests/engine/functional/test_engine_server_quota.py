"""With `--qps`, the engine throttles like the service (VISION-API.md §1: 2 QPS by default; over-limit calls
fail, they are not queued): imageseg/videoseg answer `Throttling.User`, PicWish HTTP 429. Without it, it
never throttles.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from segflow_engine.quota import CallQuota
from tests.support.engine_server import (
    LoopbackFiles,
    StubActions,
    call_rpc,
    make_png,
    serve_files,
    start_engine,
)


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(64, 64, channels=3)}) as served:
        yield served


def test_calls_over_2_qps_are_refused_with_throttling_user(files: LoopbackFiles) -> None:
    with start_engine(actions=StubActions(), qps=2) as engine:
        codes = [
            call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")}).json().get("Code")
            for _ in range(3)
        ]
        other_action = call_rpc(engine, "SegmentHead", {"ImageURL": files.url("photo.png")})
    assert codes[:2] == [None, None]
    assert codes[2] == "Throttling.User"
    assert other_action.status_code == 200  # the quota is per action, as the service's is per API


def test_picwish_over_quota_is_429(files: LoopbackFiles) -> None:
    with start_engine(actions=StubActions(), qps=1, appcodes={"code"}) as engine:
        statuses = [
            requests.post(
                engine.picwish_url,
                json={"image_url": files.url("photo.png")},
                headers={"Authorization": "APPCODE code"},
                timeout=10,
            ).status_code
            for _ in range(2)
        ]
    assert statuses == [200, 429]


def test_without_qps_nothing_is_throttled(files: LoopbackFiles) -> None:
    with start_engine(actions=StubActions()) as engine:
        statuses = {
            call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")}).status_code
            for _ in range(6)
        }
    assert statuses == {200}


def test_bucket_refills_at_the_configured_rate() -> None:
    now = [100.0]
    quota = CallQuota(2, clock=lambda: now[0])
    assert [quota.allow("k") for _ in range(3)] == [True, True, False]
    now[0] += 0.5  # one token back at 2 QPS
    assert [quota.allow("k"), quota.allow("k")] == [True, False]
    assert quota.allow("other-key")
