"""The engine answers like the service (VISION-API.md §1–§2): JSON or XML, Data shapes per action, codes.

Protocol only: the models are a stub, so these run in a second. `UnsupportedOperation` is answered with
HTTP 400 (documented in `segflow_engine.protocol`).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
import requests

from segflow.catalogue import get_action
from tests.support.engine_server import (
    PARSE_FACE_NAMES,
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_png,
    png_size,
    serve_files,
    start_engine,
)


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files(
        {"photo.png": make_png(128, 112, channels=3), "mask.png": make_png(128, 112, channels=3)}
    ) as served:
        yield served


def _download(url: str) -> bytes:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, response.text
    return response.content


def test_json_answer_carries_request_id_and_a_result_png_of_the_input_size(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    response = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert len(body["RequestId"]) == 36 and body["RequestId"] == body["RequestId"].upper()
    assert png_size(_download(body["Data"]["ImageURL"])) == (128, 112)


def test_format_xml_gives_the_action_response_element(engine: RunningEngine, files: LoopbackFiles) -> None:
    response = call_rpc(engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png"), "Format": "XML"})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/xml;charset=utf-8"
    root = ET.fromstring(response.content)
    assert root.tag == "SegmentCommonImageResponse"
    assert root.findtext("RequestId")
    image_url = root.findtext("Data/ImageURL")
    assert image_url and png_size(_download(image_url)) == (128, 112)


def test_xml_error_is_an_error_element_with_the_four_fields(engine: RunningEngine) -> None:
    response = call_rpc(engine, "SegmentCommonImage", {"Format": "XML"})
    assert response.status_code == 400
    root = ET.fromstring(response.content)
    assert root.tag == "Error"
    assert [child.tag for child in root] == ["RequestId", "HostId", "Code", "Message"]
    assert root.findtext("Code") == "MissingImageURL"
    assert root.findtext("HostId") == engine.endpoint


def test_xml_lists_repeat_the_element_per_item(engine: RunningEngine, files: LoopbackFiles) -> None:
    response = call_rpc(engine, "ParseFace", {"ImageURL": files.url("photo.png"), "Format": "XML"})
    root = ET.fromstring(response.content)
    names = [element.findtext("Name") for element in root.findall("Data/Elements")]
    assert names == list(PARSE_FACE_NAMES)


@pytest.mark.parametrize(
    ("action", "version"),
    [
        ("SegmentSky", "2019-12-30"),  # a real imageseg action the engine does not have
        ("SegmentVideoBody", "2019-12-30"),  # videoseg action asked with imageseg's Version
        ("SegmentBody", "2020-03-20"),  # imageseg action asked with videoseg's Version
        ("SegmentBody", "2018-01-01"),  # a Version neither product has
        ("PicWish", "2019-12-30"),  # not an RPC action
    ],
)
def test_unknown_action_or_wrong_version_is_unsupported_operation(
    engine: RunningEngine, files: LoopbackFiles, action: str, version: str
) -> None:
    response = call_rpc(engine, action, {"ImageURL": files.url("photo.png")}, version=version)
    assert response.status_code == 400
    assert response.json()["Code"] == "UnsupportedOperation"


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_missing_image_url_is_missing_image_url(engine: RunningEngine, signature: str) -> None:
    response = call_rpc(engine, "SegmentHead", {}, signature=signature)
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingImageURL"


def test_missing_video_url_is_missing_parameter(engine: RunningEngine) -> None:
    response = call_rpc(engine, "SegmentVideoBody", {}, version="2020-03-20")
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingParameter"


def test_refine_mask_without_mask_url_is_missing_parameter(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    response = call_rpc(engine, "RefineMask", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingParameter"


def test_refine_mask_fetches_the_mask_and_hands_it_to_the_model(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    response = call_rpc(
        engine, "RefineMask", {"ImageURL": files.url("photo.png"), "MaskImageURL": files.url("mask.png")}
    )
    assert response.status_code == 200, response.text
    (element,) = response.json()["Data"]["Elements"]
    assert set(element) >= {"ImageURL"}
    assert stub.calls[-1].action == "RefineMask"
    assert stub.calls[-1].extra_images == ("MaskImageURL",)


@pytest.mark.parametrize("action", ["SegmentHead", "SegmentFace", "SegmentHair"])
def test_head_face_hair_elements_carry_the_crop_box(
    engine: RunningEngine, files: LoopbackFiles, action: str
) -> None:
    response = call_rpc(engine, action, {"ImageURL": files.url("photo.png")})
    assert response.status_code == 200, response.text
    (element,) = response.json()["Data"]["Elements"]
    assert (element["X"], element["Y"], element["Width"], element["Height"]) == (1, 2, 64, 56)
    assert png_size(_download(element["ImageURL"])) == (64, 56)


def test_parse_face_answers_origin_image_and_named_parts(engine: RunningEngine, files: LoopbackFiles) -> None:
    data = call_rpc(engine, "ParseFace", {"ImageURL": files.url("photo.png")}).json()["Data"]
    assert png_size(_download(data["OriginImageURL"])) == (128, 112)
    assert [element["Name"] for element in data["Elements"]] == list(PARSE_FACE_NAMES)
    assert all(element["ImageURL"].startswith(engine.base_url) for element in data["Elements"])


def test_furniture_elements_spell_image_url_as_the_service_does(
    engine: RunningEngine, files: LoopbackFiles
) -> None:
    # Spec §2: SegmentFurniture answers Elements[].ImageUrl (sic, lower-case "rl").
    data = call_rpc(engine, "SegmentFurniture", {"ImageURL": files.url("photo.png")}).json()["Data"]
    (element,) = data["Elements"]
    assert "ImageUrl" in element and "ImageURL" not in element


def test_vehicle_elements_carry_origin_and_cutout(engine: RunningEngine, files: LoopbackFiles) -> None:
    data = call_rpc(engine, "SegmentVehicle", {"ImageURL": files.url("photo.png")}).json()["Data"]
    (element,) = data["Elements"]
    assert png_size(_download(element["OriginImageURL"])) == (128, 112)
    assert png_size(_download(element["ImageURL"])) == (64, 56)


def test_return_form_reaches_the_model(
    engine: RunningEngine, stub: StubActions, files: LoopbackFiles
) -> None:
    response = call_rpc(
        engine, "SegmentCommonImage", {"ImageURL": files.url("photo.png"), "ReturnForm": "mask"}
    )
    mask = _download(response.json()["Data"]["ImageURL"])
    assert mask[25] == 0  # PNG colour type 0: one grey channel
    assert stub.calls[-1].params["ReturnForm"] == "mask"


def test_v3_call_is_routed_by_the_x_acs_headers(engine: RunningEngine, files: LoopbackFiles) -> None:
    # The official SDK names the action only in x-acs-action / x-acs-version, not in the query.
    response = call_rpc(engine, "SegmentHead", {"ImageURL": files.url("photo.png")}, signature="v3")
    assert response.status_code == 200, response.text
    assert "Elements" in response.json()["Data"]


def test_every_catalogued_image_action_is_served(engine: RunningEngine, files: LoopbackFiles) -> None:
    for name in ("SegmentBody", "SegmentCommodity", "SegmentCommonImage"):
        action = get_action(name)
        data = call_rpc(engine, name, {"ImageURL": files.url("photo.png")}).json()["Data"]
        assert set(data) == {action.result_url_key}


def test_unexpected_model_failure_is_internal_error_500(files: LoopbackFiles) -> None:
    stub = StubActions()
    stub.failure = RuntimeError("model exploded")
    with start_engine(actions=stub) as running:
        response = call_rpc(running, "SegmentBody", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 500
    assert response.json()["Code"] == "InternalError"
    json.dumps(response.json())  # still a well-formed error body


def test_request_body_over_1_mb_is_refused_with_413(engine: RunningEngine) -> None:
    response = requests.post(
        engine.base_url + "/",
        data=b"a=" + b"x" * (1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert response.status_code == 413


def test_rpc_with_another_http_method_is_refused(engine: RunningEngine) -> None:
    response = requests.put(engine.base_url + "/", params={"Action": "SegmentBody"}, timeout=10)
    assert response.status_code == 405
    assert response.json()["Code"] == "UnsupportedHTTPMethod"


def test_model_slower_than_the_sync_timeout_is_answered_408_timeout(files: LoopbackFiles) -> None:
    stub = StubActions()
    gate = stub.hold()
    with start_engine(actions=stub, sync_timeout_seconds=0.2) as running:
        response = call_rpc(running, "SegmentBody", {"ImageURL": files.url("photo.png")})
        gate.set()
    assert response.status_code == 408
    assert response.json()["Code"] == "Timeout"


def test_other_calls_are_answered_while_a_sync_call_waits_for_its_model(files: LoopbackFiles) -> None:
    import threading
    import time

    stub = StubActions()
    gate = stub.hold()
    answers: list[requests.Response] = []
    with start_engine(actions=stub, workers=1) as running:
        slow = threading.Thread(
            target=lambda: answers.append(
                call_rpc(running, "SegmentBody", {"ImageURL": files.url("photo.png")})
            )
        )
        slow.start()
        assert stub.started.wait(10)
        started = time.monotonic()
        poll = call_rpc(running, "GetAsyncJobResult", {"JobId": "none"}, version="2020-03-20")
        assert time.monotonic() - started < 2
        assert poll.json()["Code"] == "InvalidParameter"
        gate.set()
        slow.join(10)
    assert answers and answers[0].status_code == 200


def test_engine_built_but_never_started_shuts_down_at_once() -> None:
    from segflow_engine.server import EngineConfig, EngineServer

    server = EngineServer(EngineConfig(port=0), actions=StubActions())
    state_dir = server.state_dir
    server.shutdown()
    assert not state_dir.exists()  # its temporary state dir is gone
