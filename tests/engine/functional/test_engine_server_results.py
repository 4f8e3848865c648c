"""Result URLs behave like the service's: valid 30 minutes (PicWish 1 hour), unguessable, then gone
(VISION-API.md §1).

GIVEN an engine whose result store clock the test can move
WHEN  a result URL is downloaded in time, late, or after being altered
THEN  it serves the file, or refuses with 403; old results are deleted by the cleanup.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from segflow_engine.resultstore import ResultAccessError, ResultStore
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_png,
    png_size,
    serve_files,
    start_engine,
)


class MovableClock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(40, 30, channels=3)}) as served:
        yield served


@pytest.fixture
def engine_and_clock() -> Iterator[tuple[RunningEngine, MovableClock]]:
    clock = MovableClock()
    with start_engine(actions=StubActions()) as running:
        running.server.engine.store.clock = clock
        yield running, clock


def _result_url(engine: RunningEngine, files: LoopbackFiles) -> str:
    response = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 200, response.text
    url: str = response.json()["Data"]["ImageURL"]
    return url


def test_result_url_serves_the_png_with_its_content_type(
    engine_and_clock: tuple[RunningEngine, MovableClock], files: LoopbackFiles
) -> None:
    engine, _ = engine_and_clock
    response = requests.get(_result_url(engine, files), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert png_size(response.content) == (40, 30)


def test_result_url_expires_after_30_minutes(
    engine_and_clock: tuple[RunningEngine, MovableClock], files: LoopbackFiles
) -> None:
    engine, clock = engine_and_clock
    url = _result_url(engine, files)
    expires = int(parse_qs(urlsplit(url).query)["Expires"][0])
    assert 29 * 60 < expires - time.time() <= 30 * 60 + 1
    clock.offset = 29 * 60
    assert requests.get(url, timeout=10).status_code == 200
    clock.offset = 31 * 60
    late = requests.get(url, timeout=10)
    assert late.status_code == 403
    assert b"AccessDenied" in late.content


@pytest.mark.parametrize(
    "alter",
    [
        lambda url: url.replace("Signature=", "Signature=0"),
        lambda url: url.replace("Expires=", "Expires=9"),  # pushing the expiry breaks the signature
        lambda url: url.replace("/image.png", "/other.png"),
        lambda url: url.split("?")[0],  # unsigned
    ],
)
def test_altered_result_url_is_refused_with_403(
    engine_and_clock: tuple[RunningEngine, MovableClock], files: LoopbackFiles, alter: object
) -> None:
    engine, _ = engine_and_clock
    url = _result_url(engine, files)
    assert callable(alter)
    response = requests.get(alter(url), timeout=10)
    assert response.status_code == 403


def test_result_of_another_engine_is_refused(
    engine_and_clock: tuple[RunningEngine, MovableClock], files: LoopbackFiles
) -> None:
    engine, _ = engine_and_clock
    url = _result_url(engine, files)
    with start_engine(actions=StubActions()) as other:
        foreign = url.replace(engine.base_url, other.base_url)
        assert requests.get(foreign, timeout=10).status_code in (403, 404)


def test_cleanup_deletes_expired_results_only(tmp_path: Path) -> None:
    clock = MovableClock()
    store = ResultStore(tmp_path, base_url="http://127.0.0.1:1", clock=clock, grace_seconds=60)
    old = store.put_bytes("image.png", b"old", ttl_seconds=30 * 60)
    fresh = store.put_bytes("image.png", b"new", ttl_seconds=60 * 60)
    clock.offset = 32 * 60
    assert store.cleanup() == 1
    assert not old.path.exists()
    assert fresh.path.read_bytes() == b"new"
    with pytest.raises(ResultAccessError) as refused:
        store.resolve(old.result_id, old.name, str(old.expires), "0" * 64)
    assert refused.value.status == 403


def test_cleanup_removes_leftovers_of_an_earlier_process(tmp_path: Path) -> None:
    leftover = tmp_path / ("a" * 32)
    leftover.mkdir()
    (leftover / "image.png").write_bytes(b"x")
    import os

    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    store = ResultStore(tmp_path)
    assert store.cleanup() == 1
    assert not leftover.exists()


def test_head_request_gives_size_without_body(
    engine_and_clock: tuple[RunningEngine, MovableClock], files: LoopbackFiles
) -> None:
    engine, _ = engine_and_clock
    url = _result_url(engine, files)
    head = requests.head(url, timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(requests.get(url, timeout=10).content)
