"""Inputs are fetched by URL and checked with the layer's catalogue, with the service's codes (VISION-API.md
§2, §3).

GIVEN inputs on a loopback file server (some missing, some too large, some of the wrong kind)
WHEN  the engine is asked to segment them
THEN  it refuses them before any model runs, with the code the service would use.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from segflow.catalogue import MiB
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_png,
    serve_files,
)

# SegmentCommonImage (VISION-API.md §2): JPEG JPG PNG BMP WEBP, no 8/16/64-bit PNG, ≤ 3 MB, < 1280×1280.


def _png_padded_over(limit: int) -> bytes:
    """A PNG header followed by padding: just over `limit` bytes in all."""
    return make_png(32, 32, channels=3) + bytes(limit)


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files(
        {
            "ok.png": make_png(64, 64, channels=3),
            "too-big.png": _png_padded_over(3 * MiB),
            "wide.png": make_png(1280, 8, channels=3),
            "grey8.png": make_png(64, 64, channels=1),
            "text.txt": b"this is not an image at all, just some text" * 4,
        }
    ) as served:
        served.statuses["server-error.png"] = 500
        yield served


def _code(engine: RunningEngine, url: str, action: str = "SegmentCommonImage") -> tuple[int, str]:
    response = call_rpc(engine, action, {"ImageURL": url})
    return response.status_code, response.json().get("Code", "")


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1/a.png", "file:///etc/passwd", "not a url", "http:///no-host.png", "oss://bucket/a.png"],
)
def test_url_that_is_not_http_is_invalid_image_url(
    engine: RunningEngine, stub: StubActions, url: str
) -> None:
    calls_before = len(stub.calls)
    assert _code(engine, url) == (400, "InvalidImage.URL")
    assert len(stub.calls) == calls_before


def test_missing_file_is_invalid_image_download(engine: RunningEngine, files: LoopbackFiles) -> None:
    assert _code(engine, files.url("nothing-here.png")) == (400, "InvalidImage.Download")


def test_server_error_is_invalid_image_download(engine: RunningEngine, files: LoopbackFiles) -> None:
    assert _code(engine, files.url("server-error.png")) == (400, "InvalidImage.Download")


def test_unreachable_host_is_invalid_image_download(engine: RunningEngine) -> None:
    assert _code(engine, "http://127.0.0.1:9/closed.png") == (400, "InvalidImage.Download")


def test_input_over_3_mb_is_refused_as_too_large_without_running_the_model(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    # SegmentCommonImage: ≤ 3 MB → imageseg's InvalidParameter.TooLarge (catalogue's code for size).
    calls_before = len(stub.calls)
    assert _code(engine, files.url("too-big.png")) == (400, "InvalidParameter.TooLarge")
    assert len(stub.calls) == calls_before


def test_input_at_1280_pixels_wide_is_invalid_resolution(engine: RunningEngine, files: LoopbackFiles) -> None:
    # SegmentCommonImage: < 1280×1280, so 1280 wide is refused.
    assert _code(engine, files.url("wide.png")) == (400, "InvalidImage.Resolution")


def test_8_bit_png_is_invalid_content(engine: RunningEngine, files: LoopbackFiles) -> None:
    # Spec §1: no 8/16/64-bit PNG (bits per pixel) for SegmentCommonImage.
    assert _code(engine, files.url("grey8.png")) == (400, "InvalidImage.Content")


def test_text_file_is_invalid_content(engine: RunningEngine, files: LoopbackFiles) -> None:
    assert _code(engine, files.url("text.txt")) == (400, "InvalidImage.Content")


def test_accepted_input_reaches_the_model_once(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    calls_before = len(stub.calls)
    assert call_rpc(engine, "SegmentCommonImage", {"ImageURL": files.url("ok.png")}).status_code == 200
    assert len(stub.calls) == calls_before + 1
    assert stub.calls[-1].input_size == len(make_png(64, 64, channels=3))


def test_video_url_that_is_not_http_is_invalid_file_url(engine: RunningEngine) -> None:
    response = call_rpc(engine, "SegmentVideoBody", {"VideoUrl": "ftp://x/a.mp4"}, version="2020-03-20")
    assert response.status_code == 400
    assert response.json()["Code"] == "InvalidFile.URL"
