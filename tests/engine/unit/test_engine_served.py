"""Which actions an engine serves (segflow_engine.served) and what each needs installed.

GIVEN the engine's action table and the served-actions tables
WHEN  an engine is restricted to some actions (a Function Compute package built with `--actions cutout`)
THEN  the tables agree, the restriction parses names and groups, everything else is refused with the
      service's own code for an API the caller cannot use (403 InvalidApi.NotPurchase, VISION-API.md's
      imageseg error table) before anything is fetched, and only the weights the served actions need are
      checked and warmed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.errors import ApiError, ConfigError
from segflow.failure_policy import Decisions, decide
from segflow_engine import actions, models, served
from segflow_engine.rpc import route
from segflow_engine.segmenters.base import known_segmenters

CUTOUT = frozenset(served.GROUPS["cutout"])


def test_every_action_with_a_model_has_its_needs_listed() -> None:
    assert set(served.ACTION_NEEDS) == set(actions.ALL_ACTIONS)
    assert set(served.SEGMENTER_NEEDS) == set(known_segmenters())


@pytest.mark.parametrize("name", sorted(actions.ALL_ACTIONS))
def test_an_actions_needs_are_its_segmenters_needs_and_pyav_for_a_video(name: str) -> None:
    entry = actions.ALL_ACTIONS[name]
    expected = frozenset().union(*(served.SEGMENTER_NEEDS[s] for s in actions.segmenters_of(entry)))
    if entry.is_async:
        expected |= served.VIDEO_NEEDS
    assert served.ACTION_NEEDS[name] == expected


def test_a_cutout_engine_needs_isnet_and_onnxruntime_only() -> None:
    assert served.needs(CUTOUT) == {"onnxruntime", "isnet"}
    assert "mediapipe" in served.needs(served.GROUPS["people"])
    assert served.needs(served.GROUPS["video"]) >= {"pyav", "mediapipe"}


def test_groups_cover_every_action_once_besides_all() -> None:
    named = [name for group, names in served.GROUPS.items() if group != served.ALL for name in names]
    assert sorted(named) == sorted(served.ACTION_NEEDS)
    assert set(served.GROUPS[served.ALL]) == set(served.ACTION_NEEDS)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("cutout", CUTOUT),
        (" cutout , RefineMask ,", CUTOUT | {"RefineMask"}),
        ("all", frozenset(served.ACTION_NEEDS)),
        ("SegmentBody,people", frozenset(served.GROUPS["people"])),
    ],
)
def test_a_list_of_actions_and_groups_is_parsed(spec: str, expected: frozenset[str]) -> None:
    assert served.parse_actions(spec) == expected


@pytest.mark.parametrize("spec", ["SegmentSky", "segmentbody", "GetAsyncJobResult", ",", "cutout,nope"])
def test_an_unknown_name_or_an_empty_list_is_a_configuration_error(spec: str) -> None:
    with pytest.raises(ConfigError, match=served.ENV_ACTIONS):
        served.parse_actions(spec)


def test_unset_or_empty_serves_everything() -> None:
    assert served.actions_from_env({}) == frozenset(served.ACTION_NEEDS)
    assert served.actions_from_env({served.ENV_ACTIONS: "  "}) == frozenset(served.ACTION_NEEDS)
    assert served.actions_from_env({served.ENV_ACTIONS: "cutout"}) == CUTOUT


@pytest.mark.parametrize(
    ("action", "version"),
    [("SegmentBody", "2019-12-30"), ("RefineMask", "2019-12-30"), ("SegmentVideoBody", "2020-03-20")],
)
def test_an_action_outside_the_served_ones_is_refused_as_not_purchased(action: str, version: str) -> None:
    with pytest.raises(ApiError) as caught:
        route({"Action": action, "Version": version}, CUTOUT)
    assert (caught.value.code, caught.value.http_status) == ("InvalidApi.NotPurchase", 403)
    expected = f"this engine does not serve {action}; it serves SegmentCommodity, "
    assert caught.value.message.startswith(expected)


def test_the_refusal_is_a_deployment_fault_for_the_pipeline_never_a_bad_input() -> None:
    with pytest.raises(ApiError) as caught:
        route({"Action": "SegmentBody", "Version": "2019-12-30"}, CUTOUT)
    assert decide(caught.value) == Decisions.FAULT


def test_served_actions_and_job_polls_are_routed() -> None:
    assert route({"Action": "SegmentCommodity", "Version": "2019-12-30"}, CUTOUT).name == "SegmentCommodity"
    for version in ("2019-12-30", "2020-03-20"):  # a job poll names no model: always answered
        assert route({"Action": "GetAsyncJobResult", "Version": version}, CUTOUT).name == "GetAsyncJobResult"


def test_a_model_call_for_an_action_not_served_is_refused_before_the_image_is_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # PicWish's own path reaches the models without `route`: the same refusal holds there.
    monkeypatch.setattr(served, "served_actions", lambda: CUTOUT)
    with pytest.raises(ApiError, match="does not serve PicWish"):
        actions.run_image_action("PicWish", {}, b"not even an image", {})
    with pytest.raises(ApiError, match="does not serve SegmentVideoBody"):
        actions.run_video_action("SegmentVideoBody", {}, tmp_path / "in.mp4", tmp_path / "out.mp4")


def test_the_table_keeps_only_the_served_actions() -> None:
    table = actions.only_served(actions.ALL_ACTIONS, CUTOUT)
    assert list(table) == [name for name in actions.ALL_ACTIONS if name in CUTOUT]


def test_warm_up_loads_only_what_the_served_actions_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actions, "ACTIONS", actions.only_served(actions.ALL_ACTIONS, CUTOUT))
    assert actions.served_warm_up() == ("salient",)
    monkeypatch.setattr(actions, "ACTIONS", actions.ALL_ACTIONS)
    assert set(actions.served_warm_up()) == set(actions.WARM_UP_SEGMENTERS) - {"pose_person"}


def test_only_the_needed_weights_are_checked(tmp_path: Path) -> None:
    assert models.missing_models(tmp_path, needs=frozenset()) == []
    assert models.missing_models(tmp_path, needs=frozenset({"mediapipe"})) == []  # installed by make setup
    (problem,) = models.missing_models(tmp_path, needs=frozenset({"onnxruntime", "isnet"}))
    assert problem.startswith("ISNet weights missing or damaged")
