"""The engine's action table (segflow_engine.actions.ACTIONS) against the layer's catalogue.

The catalogue (segflow.catalogue) is the one home of action names and of which actions are asynchronous
jobs; the engine's table only says which segmenter and which renderer answer each one. Nothing here loads a
model: refusals happen before any segmenter is created.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segflow import catalogue
from segflow.errors import UnknownActionError
from segflow_engine import actions
from segflow_engine.actions import ACTIONS, PICWISH_SEGMENTERS, EngineAction, action_table
from segflow_engine.segmenters.base import known_segmenters

RGB = np.zeros((8, 8, 3), dtype=np.uint8)


def test_the_table_serves_every_action_a_rule_can_route_to_and_picwish() -> None:
    # A routing rule may name any catalogue action that takes an image or a video file (MEDIA_ACTIONS; an
    # object of the other media fails); PicWish is also served on its own API path.
    assert set(ACTIONS) == {*catalogue.MEDIA_ACTIONS, "PicWish"}
    assert "GetAsyncJobResult" not in ACTIONS  # the server's job store answers it, not a model


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_each_action_is_served_the_way_the_catalogue_says(name: str) -> None:
    entry, listed = ACTIONS[name], catalogue.ACTIONS[name]
    assert entry.name == name
    assert entry.is_async is listed.is_async
    # Async actions are the video jobs, streamed without a renderer; sync ones are images with a renderer.
    assert (entry.render is None) is listed.is_async is (listed.media == "video")


@pytest.mark.parametrize("name", sorted(ACTIONS))
def test_each_action_names_a_registered_segmenter(name: str) -> None:
    entry = ACTIONS[name]
    used = set(PICWISH_SEGMENTERS.values()) if name == "PicWish" else {entry.segmenter}
    assert used <= set(known_segmenters())


@pytest.mark.parametrize("action", ["Nope", "segmentbody", "GetAsyncJobResult", "SegmentVideoBody"])
def test_an_action_without_an_image_model_is_refused(action: str) -> None:
    with pytest.raises(UnknownActionError) as caught:
        actions.run_image_action(action, {}, RGB, {})
    assert caught.value.message == f"the engine has no image model for action {action!r}"
    assert caught.value.code == "UnsupportedOperation" and caught.value.http_status == 400


@pytest.mark.parametrize("action", ["Nope", "GetAsyncJobResult", "SegmentBody", "PicWish"])
def test_an_action_without_a_video_model_is_refused(action: str, tmp_path: Path) -> None:
    with pytest.raises(UnknownActionError) as caught:
        actions.run_video_action(action, {}, tmp_path / "in.mp4", tmp_path / "out.mp4")
    assert caught.value.message == f"the engine has no video model for action {action!r}"
    assert not (tmp_path / "out.mp4").exists()


def test_a_table_that_contradicts_the_catalogue_cannot_be_built() -> None:
    render = ACTIONS["SegmentBody"].render
    with pytest.raises(TypeError, match="SegmentVideoBody is served as an image call"):
        action_table(EngineAction("SegmentVideoBody", "video_person", render))
    with pytest.raises(TypeError, match="SegmentBody is served as a video job"):
        action_table(EngineAction("SegmentBody", "person"))
    with pytest.raises(UnknownActionError):
        action_table(EngineAction("SegmentEverything", "salient", render))
    with pytest.raises(TypeError, match="twice"):
        action_table(
            EngineAction("SegmentBody", "person", render), EngineAction("SegmentBody", "salient", render)
        )


@pytest.mark.parametrize(
    "bad",
    [
        {"type": "auto"},
        {"output_type": "4"},
        {"crop": "yes"},
        {"format": "jpeg"},
        {"bg_color": "white"},
    ],
)
def test_picwish_options_are_checked_once_for_the_http_api_and_the_action(bad: dict[str, str]) -> None:
    """The PicWish page's option values (shared/VISION-API.md §4) have one check, `picwish.options`: the
    HTTP API answers 400 and the action refuses with InvalidParameter, with the same message."""
    from segflow.errors import InputValidationError
    from segflow_engine import picwish

    fields = {"image_url": "http://127.0.0.1/x.png", **bad}
    with pytest.raises(picwish.PicWishBadRequest) as http:
        picwish.parse_request("application/json", b"", fields)
    with pytest.raises(InputValidationError) as action:
        actions.run_image_action("PicWish", fields, RGB)
    assert http.value.status == 400 and action.value.code == "InvalidParameter"
    assert http.value.message == action.value.message
