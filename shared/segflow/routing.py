"""Which action an uploaded object goes to.

Rules are data (`SEGFLOW_RULES` JSON, docs/configuration.md): the first rule whose key prefix, key suffix
and media type all match decides the action and its parameters; otherwise images go to SegmentCommonImage
and videos to SegmentVideoBody. Action names are not checked here: a rule naming an unknown action must end
as a failure record of the one object it matched (`UnsupportedOperation`), not as a broken deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from segflow.errors import ConfigError
from segflow.values import Value

DEFAULT_IMAGE_ACTION = "SegmentCommonImage"
DEFAULT_VIDEO_ACTION = "SegmentVideoBody"
MEDIA_TYPES = frozenset({"image", "video"})

_RULE_FIELDS = frozenset({"prefix", "suffix", "media", "action", "params", "name", "pair", "pair_timeout"})
PAIRED_ACTIONS = frozenset({"RefineMask"})
DEFAULT_PAIR_TIMEOUT = 3600.0
_STEM = "{stem}"


class Rule(Value):
    """One routing rule; empty `prefix`/`suffix` and `media=None` match everything."""

    action: str
    prefix: str = ""
    suffix: str = ""
    media: str | None = None
    params: Mapping[str, str] = MappingProxyType({})
    name: str = ""
    pair: str = ""
    """The mask's file name for an image of stem `{stem}` (RefineMask pairs), e.g. `{stem}.mask.png`."""
    pair_timeout: float = DEFAULT_PAIR_TIMEOUT

    def mask_stem(self, key: str) -> str | None:
        """The image stem when `key` is this rule's mask (its folder under the rule's prefix), else None."""
        if not self.pair or (self.prefix and not key.startswith(self.prefix)):
            return None
        name = key.rsplit("/", 1)[-1]
        head, tail = self.pair.split(_STEM, 1)
        if len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail):
            return name[len(head) : len(name) - len(tail)]
        return None

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
        for name in ("prefix", "suffix", "name", "pair"):
            if not isinstance(data.get(name, ""), str):
                raise ConfigError(f"routing rule '{name}' must be a string: {dict(data)}")
        pair, timeout = _pairing(data, action)
        return cls(
            action=action,
            prefix=str(data.get("prefix", "")),
            suffix=str(data.get("suffix", "")),
            media=media,
            params=params,
            name=str(data.get("name", "")),
            pair=pair,
            pair_timeout=timeout,
        )


def _pairing(data: Mapping[str, Any], action: str) -> tuple[str, float]:
    """A rule's pair pattern and wait. RefineMask takes an image and its coarse mask: `"pair":
    "{stem}.mask.png"` pairs `photo.jpg` with `photo.mask.png` in the same folder; a key whose file name
    fits the pattern is the mask (whatever the rule's suffix or media say), any other key the rule matches
    is the image. `pair_timeout` (seconds, default 3600) bounds the wait for the other (`services.pairs`)."""
    pair = str(data.get("pair", ""))
    timeout = data.get("pair_timeout", DEFAULT_PAIR_TIMEOUT)
    if not pair:
        if "pair_timeout" in data:
            raise ConfigError(f"routing rule 'pair_timeout' needs 'pair': {dict(data)}")
        return "", DEFAULT_PAIR_TIMEOUT
    if action not in PAIRED_ACTIONS:
        raise ConfigError(f"routing rule 'pair' is for {sorted(PAIRED_ACTIONS)}, not {action}: {dict(data)}")
    if pair.count(_STEM) != 1 or "/" in pair or pair == _STEM:
        raise ConfigError(
            f"routing rule 'pair' must be a file name holding {_STEM} once, like '{{stem}}.mask.png'"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 7 * 86400:
        raise ConfigError(
            f"routing rule 'pair_timeout' must be seconds, more than 0 and at most a week: {timeout!r}"
        )
    return pair, float(timeout)


def _param_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    raise ConfigError(f"routing rule parameter values must be strings, numbers or booleans, got {value!r}")


class Pairing(Value):
    """Which half of a RefineMask pair an object is, and where its other half is (or may be)."""

    role: str  # "image" | "mask"
    folder: str  # the key prefix both share, "" or ending in "/"
    stem: str
    mask_key: str
    timeout: float

    @property
    def image_prefix(self) -> str:
        """Where the image of a mask may be: `<folder><stem>.` (its extension is not known)."""
        return f"{self.folder}{self.stem}."


class Route(Value):
    """The decision for one object: the action to call and its extra parameters."""

    action: str
    params: Mapping[str, str]
    rule: str  # the rule's name, "rule <n>", or "default" — for logs and manifests
    pair: Pairing | None = None


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
    """The first matching rule's route, else the default for the media type; None when nothing applies. A
    pairing rule's mask goes to that rule first, whatever its suffix or media."""
    rules = tuple(rules)
    for index, rule in enumerate(rules):
        stem = rule.mask_stem(key)
        if stem is not None:
            return _paired(rule, index, key, stem, "mask")
    for index, rule in enumerate(rules):
        if rule.matches(key, media):
            if rule.pair:
                name = key.rsplit("/", 1)[-1]
                return _paired(rule, index, key, name.rsplit(".", 1)[0] if "." in name else name, "image")
            return Route(action=rule.action, params=dict(rule.params), rule=rule.name or f"rule {index}")
    if media == "image":
        return Route(action=default_image_action, params={}, rule="default")
    if media == "video":
        return Route(action=default_video_action, params={}, rule="default")
    return None


def _paired(rule: Rule, index: int, key: str, stem: str, role: str) -> Route:
    folder = key[: key.rfind("/") + 1]
    pairing = Pairing(role, folder, stem, folder + rule.pair.replace(_STEM, stem), rule.pair_timeout)
    return Route(
        action=rule.action, params=dict(rule.params), rule=rule.name or f"rule {index}", pair=pairing
    )
