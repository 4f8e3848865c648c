"""PicWish's cut-out API on the engine (VISION-API.md §4): AppCode auth, JSON or form bodies, outcome in
`data.state`.

GIVEN an engine with stub models and a known AppCode
WHEN  tasks are posted to /tasks/visual/segmentation
THEN  a bad AppCode is 401, bad parameters 400, and every task is HTTP 200 with `data.state` 1 (links valid
      1 hour) or the documented failure state: -3 download failed, -5 over 15 MB, -7 invalid image, -1 failed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from segflow.catalogue import MiB
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    make_png,
    png_size,
    serve_files,
    start_engine,
)

APPCODE = "0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files(
        {
            "photo.png": make_png(80, 60, channels=3),
            "huge.png": make_png(16, 16, channels=3) + bytes(15 * MiB),  # PicWish: ≤ 15 MB
            "gif.gif": b"GIF89a" + bytes(64),  # PicWish: no GIF
            "giant.png": make_png(4097, 2, channels=3),  # PicWish: ≤ 4096×4096
        }
    ) as served:
        yield served


@pytest.fixture(scope="module")
def engine(stub: StubActions) -> Iterator[RunningEngine]:
    with start_engine(actions=stub, appcodes={APPCODE}) as running:
        yield running


def _post(
    engine: RunningEngine, fields: dict[str, Any], *, appcode: str | None = APPCODE, form: bool = False
) -> requests.Response:
    headers = {"Authorization": f"APPCODE {appcode}"} if appcode is not None else {}
    if form:
        return requests.post(engine.picwish_url, data=fields, headers=headers, timeout=30)
    return requests.post(engine.picwish_url, json=fields, headers=headers, timeout=30)


def _data(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["message"]) == (200, "success")
    data: dict[str, Any] = body["data"]
    return data


@pytest.mark.parametrize("appcode", [None, "wrong", ""])
def test_missing_or_wrong_appcode_is_401(
    engine: RunningEngine, files: LoopbackFiles, appcode: str | None
) -> None:
    response = _post(engine, {"image_url": files.url("photo.png")}, appcode=appcode)
    assert response.status_code == 401
    assert response.headers["X-Ca-Error-Message"] == "Invalid AppCode"


def test_json_task_gives_state_1_and_an_image_link_valid_one_hour(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    data = _data(_post(engine, {"image_url": files.url("photo.png")}))
    assert data["state"] == 1
    assert data["output_type"] == 2
    assert "mask" not in data
    assert data["task_id"]
    image = requests.get(data["image"], timeout=10)
    assert png_size(image.content) == (80, 60)
    expires = int(parse_qs(urlsplit(data["image"]).query)["Expires"][0])
    assert 59 * 60 < expires - time.time() <= 60 * 60 + 1


def test_form_body_task_is_accepted(engine: RunningEngine, files: LoopbackFiles) -> None:
    data = _data(_post(engine, {"image_url": files.url("photo.png"), "output_type": "3"}, form=True))
    assert data["state"] == 1
    assert "image" not in data
    assert png_size(requests.get(data["mask"], timeout=10).content) == (80, 60)


def test_output_type_1_gives_image_and_mask(engine: RunningEngine, files: LoopbackFiles) -> None:
    data = _data(_post(engine, {"image_url": files.url("photo.png"), "output_type": 1}))
    assert data["image"] and data["mask"]


def test_jpg_format_gives_a_jpg_link_and_passes_bg_color(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    fields = {"image_url": files.url("photo.png"), "format": "jpg", "bg_color": "ff0000", "type": "person"}
    data = _data(_post(engine, fields))
    assert urlsplit(data["image"]).path.endswith(".jpg")
    call = stub.calls[-1]
    assert (call.action, call.params["format"], call.params["bg_color"], call.params["type"]) == (
        "PicWish",
        "jpg",
        "ff0000",
        "person",
    )


def test_task_can_be_read_again_by_its_id(engine: RunningEngine, files: LoopbackFiles) -> None:
    data = _data(_post(engine, {"image_url": files.url("photo.png")}))
    again = requests.get(
        f"{engine.picwish_url}/{data['task_id']}", headers={"Authorization": f"APPCODE {APPCODE}"}, timeout=10
    )
    assert _data(again) == data
    unknown = requests.get(
        f"{engine.picwish_url}/nope", headers={"Authorization": f"APPCODE {APPCODE}"}, timeout=10
    )
    assert unknown.status_code == 404


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"image_url": ""},
        {"image_url": "http://127.0.0.1/" + "a" * 512},  # ≤ 512 characters
        {"image_url": "ftp://127.0.0.1/a.png"},
        {"image_url": "http://127.0.0.1/a.png", "output_type": 4},
        {"image_url": "http://127.0.0.1/a.png", "type": "cat"},
        {"image_url": "http://127.0.0.1/a.png", "format": "gif"},
        {"image_url": "http://127.0.0.1/a.png", "bg_color": "red"},
        {"image_url": "http://127.0.0.1/a.png", "crop": 2},
    ],
)
def test_bad_parameters_are_400(engine: RunningEngine, fields: dict[str, Any]) -> None:
    response = _post(engine, fields)
    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_malformed_json_is_400(engine: RunningEngine) -> None:
    response = requests.post(
        engine.picwish_url,
        data=b"{not json",
        headers={"Authorization": f"APPCODE {APPCODE}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400


def test_download_failure_is_state_minus_3(engine: RunningEngine, files: LoopbackFiles) -> None:
    data = _data(_post(engine, {"image_url": files.url("missing.png")}))
    assert data["state"] == -3
    assert "image" not in data


def test_input_over_15_mb_is_state_minus_5(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    calls_before = len(stub.calls)
    data = _data(_post(engine, {"image_url": files.url("huge.png")}))
    assert data["state"] == -5
    assert len(stub.calls) == calls_before


@pytest.mark.parametrize("name", ["gif.gif", "giant.png"])
def test_refused_image_is_state_minus_7(engine: RunningEngine, files: LoopbackFiles, name: str) -> None:
    assert _data(_post(engine, {"image_url": files.url(name)}))["state"] == -7


def test_model_failure_is_state_minus_1(files: LoopbackFiles) -> None:
    stub = StubActions()
    stub.failure = RuntimeError("cut-out failed")
    with start_engine(actions=stub, appcodes={APPCODE}) as running:
        data = _data(_post(running, {"image_url": files.url("photo.png")}))
    assert data["state"] == -1
    assert "cut-out failed" in data["state_detail"]
