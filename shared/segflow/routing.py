"""Which action an uploaded object goes to.

Rules are data (`SEGFLOW_RULES` JSON): the first rule whose key prefix, key suffix and media type all match
decides the action and its parameters; otherwise images go to SegmentCommonImage and videos to
SegmentVideoBody. Action names are not checked here: a rule naming an unknown action must end as a failure
record of the one object it matched (`UnsupportedOperation`), not as a broken deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from segflow.errors import ConfigError

DEFAULT_IMAGE_ACTION = "SegmentCommonImage"
DEFAULT_VIDEO_ACTION = "SegmentVideoBody"
MEDIA_TYPES = frozenset({"image", "video"})

_RULE_FIELDS = frozenset({"prefix", "suffix", "media", "action", "params", "name"})


@dataclass(frozen=True)
class Rule:
    """One routing rule; empty `prefix`/`suffix` and `media=None` match everything."""

    action: str
    prefix: str = ""
    suffix: str = ""
    media: str | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    name: str = ""

    def matches(self, key: str, media: str | None) -> bool:
        if self.prefix and not key.startswith(self.prefix):
            return False
        # Suffixes are file extensions in practice and cameras write `.JPG`; compare without case.
        if self.suffix and not key.lower().endswith(self.suffix.lower()):
            return False
        return self.media is None or self.media == media

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rule:
        """A rule from its JSON form: {"prefix", "suffix", "media", "action", "params", "name"}."""
        unknown = set(data) - _RULE_FIELDS
        if unknown:
            raise ConfigError(f"routing rule has unknown fields {sorted(unknown)}: {dict(data)}")
        action = data.get("action")
        if not isinstance(action, str) or not action:
            raise ConfigError(f"routing rule needs a non-empty string 'action': {dict(data)}")
        media = data.get("media")
        if media is not None and media not in MEDIA_TYPES:
            raise ConfigError(f"routing rule 'media' must be one of {sorted(MEDIA_TYPES)}: {dict(data)}")
        params_raw = data.get("params") or {}
        if not isinstance(params_raw, Mapping):
            raise ConfigError(f"routing rule 'params' must be an object: {dict(data)}")
        # The APIs take every parameter as a string; JSON true/1 become "true"/"1" as the service expects.
        params = {str(k): _param_text(v) for k, v in params_raw.items()}
        for name in ("prefix", "suffix", "name"):
            if not isinstance(data.get(name, ""), str):
                raise ConfigError(f"routing rule '{name}' must be a string: {dict(data)}")
        return cls(
            action=action,
            prefix=str(data.get("prefix", "")),
            suffix=str(data.get("suffix", "")),
            media=media,
            params=params,
            name=str(data.get("name", "")),
        )


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise ConfigError(f"routing rule parameter values must be strings, numbers or booleans, got {value!r}")


@dataclass(frozen=True)
class Route:
    """The decision for one object: the action to call and its extra parameters."""

    action: str
    params: Mapping[str, str]
    rule: str  # the rule's name, "rule <n>", or "default" — for logs and manifests


def parse_rules(raw: str | Sequence[Mapping[str, Any] | Rule] | None) -> tuple[Rule, ...]:
    """Rules from `SEGFLOW_RULES` (a JSON list) or an already decoded list; ConfigError when malformed."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        if not raw.strip():
            return ()
        try:
            decoded = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"SEGFLOW_RULES is not valid JSON: {exc}") from exc
        if not isinstance(decoded, list):
            raise ConfigError("SEGFLOW_RULES must be a JSON list of rule objects")
        raw = decoded
    rules: list[Rule] = []
    for item in raw:
        if isinstance(item, Rule):
            rules.append(item)
        elif isinstance(item, Mapping):
            rules.append(Rule.from_mapping(item))
        else:
            raise ConfigError(f"routing rule must be an object, got {item!r}")
    return tuple(rules)


def route(
    key: str,
    media: str | None,
    rules: Iterable[Rule] = (),
    *,
    default_image_action: str = DEFAULT_IMAGE_ACTION,
    default_video_action: str = DEFAULT_VIDEO_ACTION,
) -> Route | None:
    """The first matching rule's route, else the default for the media type; None when nothing applies."""
    for index, rule in enumerate(rules):
        if rule.matches(key, media):
            return Route(action=rule.action, params=dict(rule.params), rule=rule.name or f"rule {index}")
    if media == "image":
        return Route(action=default_image_action, params={}, rule="default")
    if media == "video":
        return Route(action=default_video_action, params={}, rule="default")
    return None
