"""Which actions this engine serves, and what each action needs installed: the one home of both.

An engine serves every action unless `SEGFLOW_ENGINE_ACTIONS` names fewer (catalogue action names and
`GROUPS`: a Function Compute package built with `--actions cutout` holds no MediaPipe). Light on purpose
(no numpy, no model): `rpc.route` refuses with it, `models.check_installed` checks only the weights the
served actions need, and the package build reads the same tables to choose the wheels.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from functools import cache
from types import MappingProxyType

from segflow.catalogue import ACTIONS as CATALOGUE
from segflow.errors import ApiError, ConfigError

ENV_ACTIONS = "SEGFLOW_ENGINE_ACTIONS"
# The service's answer for an API the caller cannot use (imageseg's error table, VISION-API.md). segflow's
# failure policy reads it as a deployment fault: an upload routed to a missing action is handed back to FC
# to retry, never recorded as a bad input (docs/engine-on-fc.md, "Build the package").
NOT_SERVED_CODE = "InvalidApi.NotPurchase"
NOT_SERVED_STATUS = 403
ALL = "all"

# What a segmenter loads, itself or through the segmenters it builds on (`segmenters.base._MODULES` names
# them). Components: `onnxruntime` and the `isnet` weights (salient objects), `mediapipe` (its graphs carry
# their own weights), `pymatting` (closed-form matting: numba and scipy). numpy, OpenCV, Pillow and requests
# are needed by every action and are not listed.
_ISNET = frozenset({"onnxruntime", "isnet"})
_MEDIAPIPE = frozenset({"mediapipe"})
SEGMENTER_NEEDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "salient": _ISNET,
        "face": _MEDIAPIPE,
        "pose_person": _MEDIAPIPE,
        "person": _MEDIAPIPE | _ISNET,  # pose_person + salient, gated by face
        "head": _MEDIAPIPE | _ISNET,  # face + person
        "hair": _MEDIAPIPE | _ISNET,
        "parse_face": _MEDIAPIPE,
        "matting": _ISNET | {"pymatting"},  # a coarse mask from salient when none is given
        "stamp": frozenset(),
        "greenscreen": frozenset(),
        "video_person": _MEDIAPIPE,
        "half_body": _MEDIAPIPE,
    }
)
VIDEO_NEEDS = frozenset({"pyav"})  # every video action decodes and encodes with PyAV (`videoio`)

# Per catalogue action: its segmenters' needs, plus PyAV for a video. `segflow_engine.actions.ACTIONS` says
# which segmenters answer each action; tests/engine/unit/test_engine_served.py holds the two tables equal.
ACTION_NEEDS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "SegmentBody": SEGMENTER_NEEDS["person"],
        "SegmentCommonImage": _ISNET,
        "SegmentCommodity": _ISNET,
        "SegmentFurniture": _ISNET,
        "SegmentVehicle": _ISNET,
        "SegmentHead": SEGMENTER_NEEDS["head"],
        "SegmentFace": SEGMENTER_NEEDS["face"],
        "SegmentHair": SEGMENTER_NEEDS["hair"],
        "ParseFace": SEGMENTER_NEEDS["parse_face"],
        "RefineMask": SEGMENTER_NEEDS["matting"],
        "SegmentVideoBody": SEGMENTER_NEEDS["video_person"] | VIDEO_NEEDS,
        "SegmentHalfBody": SEGMENTER_NEEDS["half_body"] | VIDEO_NEEDS,
        "SegmentGreenScreenVideo": SEGMENTER_NEEDS["greenscreen"] | VIDEO_NEEDS,
        "PicWish": SEGMENTER_NEEDS["person"] | SEGMENTER_NEEDS["salient"] | SEGMENTER_NEEDS["stamp"],
    }
)

# Names a build or SEGFLOW_ENGINE_ACTIONS may use for several actions at once.
GROUPS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "cutout": ("SegmentCommonImage", "SegmentCommodity", "SegmentFurniture", "SegmentVehicle"),
        "people": ("SegmentBody", "SegmentHead", "SegmentFace", "SegmentHair", "ParseFace"),
        "matting": ("RefineMask",),
        "video": ("SegmentVideoBody", "SegmentHalfBody", "SegmentGreenScreenVideo"),
        "picwish": ("PicWish",),
        ALL: tuple(ACTION_NEEDS),
    }
)


def parse_actions(spec: str) -> frozenset[str]:
    """The actions a comma list of action names and group names stands for; `ConfigError` for an unknown one
    (a catalogue action the engine has no model for is unknown too)."""
    chosen: set[str] = set()
    for word in (part.strip() for part in spec.split(",")):
        if not word:
            continue
        if word in GROUPS:
            chosen.update(GROUPS[word])
        elif word in ACTION_NEEDS:
            chosen.add(word)
        else:
            known = ", ".join([*GROUPS, *ACTION_NEEDS])
            raise ConfigError(f"{ENV_ACTIONS}: no action or group named {word!r} (known: {known})")
    if not chosen:
        raise ConfigError(f"{ENV_ACTIONS}={spec!r} names no action")
    return frozenset(chosen)


def actions_from_env(environ: Mapping[str, str]) -> frozenset[str]:
    """`SEGFLOW_ENGINE_ACTIONS`, or every action when it is unset or empty."""
    spec = environ.get(ENV_ACTIONS, "").strip()
    return parse_actions(spec) if spec else frozenset(ACTION_NEEDS)


@cache
def served_actions() -> frozenset[str]:
    """What this process serves, read from the environment once."""
    return actions_from_env(os.environ)


def needs(actions: Iterable[str]) -> frozenset[str]:
    """The components (see `SEGMENTER_NEEDS`) the given actions need together."""
    return frozenset().union(*(ACTION_NEEDS[name] for name in actions))


def in_order(actions: Iterable[str]) -> list[str]:
    """The actions in the catalogue's order (logs, manifests)."""
    chosen = set(actions)
    return [name for name in CATALOGUE if name in chosen]


def require_served(action: str, served: frozenset[str] | None = None) -> None:
    """Refuse an action this engine does not serve, before anything is fetched, as the service refuses an
    API the caller cannot use."""
    served = served_actions() if served is None else served
    if action in ACTION_NEEDS and action not in served:
        raise ApiError(
            f"this engine does not serve {action}; it serves {', '.join(in_order(served))} "
            f"(the package was built without it: see {ENV_ACTIONS})",
            code=NOT_SERVED_CODE,
            http_status=NOT_SERVED_STATUS,
        )
