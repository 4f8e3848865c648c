"""Routing: rules from key prefix / suffix / media type to an action (issue 3, "Routing")."""

from __future__ import annotations

import pytest

from segflow.errors import ConfigError
from segflow.routing import Rule, parse_rules, route


def test_images_default_to_segment_common_image_and_videos_to_segment_video_body() -> None:
    assert route("incoming/a.jpg", "image").action == "SegmentCommonImage"  # type: ignore[union-attr]
    assert route("incoming/a.mp4", "video").action == "SegmentVideoBody"  # type: ignore[union-attr]


def test_unknown_media_type_has_no_route() -> None:
    assert route("incoming/a.bin", None) is None


def test_first_matching_rule_wins_and_carries_its_params() -> None:
    rules = parse_rules(
        '[{"prefix": "incoming/faces/", "action": "SegmentHead", "params": {"ReturnForm": "mask"}},'
        ' {"prefix": "incoming/", "media": "image", "action": "SegmentBody"}]'
    )
    chosen = route("incoming/faces/me.png", "image", rules)
    assert chosen is not None
    assert (chosen.action, chosen.rule) == ("SegmentHead", "rule 0")
    assert dict(chosen.params) == {"ReturnForm": "mask"}
    other = route("incoming/team.png", "image", rules)
    assert other is not None and other.action == "SegmentBody"


def test_media_condition_lets_videos_fall_through_to_the_default() -> None:
    rules = parse_rules([{"prefix": "incoming/", "media": "image", "action": "SegmentBody"}])
    chosen = route("incoming/clip.mp4", "video", rules)
    assert chosen is not None and (chosen.action, chosen.rule) == ("SegmentVideoBody", "default")


def test_suffix_matches_without_case_because_cameras_write_upper_case_extensions() -> None:
    rules = parse_rules([{"suffix": ".jpg", "action": "PicWish", "params": {"type": "person"}, "name": "pw"}])
    chosen = route("incoming/DSC0001.JPG", "image", rules)
    assert chosen is not None and (chosen.action, chosen.rule) == ("PicWish", "pw")


def test_prefix_matches_with_case() -> None:
    rules = (Rule(action="SegmentHair", prefix="incoming/Hair/"),)
    chosen = route("incoming/hair/x.png", "image", rules)
    assert chosen is not None and chosen.action == "SegmentCommonImage"


def test_json_booleans_and_numbers_become_the_strings_the_api_takes() -> None:
    (rule,) = parse_rules([{"action": "SegmentBody", "params": {"Async": True, "crop": 1}}])
    assert dict(rule.params) == {"Async": "true", "crop": "1"}


def test_unknown_action_name_is_kept_for_a_per_object_failure_record() -> None:
    (rule,) = parse_rules([{"action": "SegmentEverything"}])
    chosen = route("incoming/a.png", "image", (rule,))
    assert chosen is not None and chosen.action == "SegmentEverything"


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        '{"action": "SegmentBody"}',
        '[{"prefix": "incoming/"}]',
        '[{"action": "SegmentBody", "media": "audio"}]',
        '[{"action": "SegmentBody", "colour": "red"}]',
        '[{"action": "SegmentBody", "params": ["Async"]}]',
        '[{"action": "SegmentBody", "params": {"Async": null}}]',
        "[42]",
    ],
)
def test_malformed_rules_are_a_config_error(raw: str) -> None:
    with pytest.raises(ConfigError):
        parse_rules(raw)


def test_empty_rules_text_means_defaults_only() -> None:
    assert parse_rules("") == ()
    assert parse_rules(None) == ()
