"""The one segmenter interface, the registry from name to class, and the per-process instance cache.

A segmenter owns its model(s) and is created once per process (`get_segmenter`): loading a MediaPipe graph
or the ISNet session costs far more than one inference. MediaPipe graphs are not thread-safe, so every
segmenter serialises its own model calls with a lock; different segmenters run in parallel.
"""

from __future__ import annotations

import importlib
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np

# name -> module that registers it; imported on first use so loading one model never loads the others.
# tests/project/test_architecture.py checks it against the `@register` classes of every module.
_MODULES: dict[str, str] = {
    "person": "person",
    "pose_person": "person",
    "salient": "salient",
    "face": "facedetect",
    "head": "faceparts",
    "hair": "faceparts",
    "parse_face": "faceparts",
    "matting": "matting",
    "greenscreen": "color",
    "stamp": "color",
    "video_person": "video",
    "half_body": "video",
}

REGISTRY: dict[str, type[Segmenter]] = {}
_INSTANCES: dict[str, Segmenter] = {}
_INSTANCES_LOCK = threading.RLock()  # re-entrant: composite segmenters create their parts


@dataclass
class ElementMask:
    """One element of a multi-element result (a face, a head, a face part)."""

    name: str | None
    box: tuple[int, int, int, int]  # x, y, width, height in source coordinates
    mask: np.ndarray  # height×width uint8 alpha of the crop


@dataclass
class Segmentation:
    mask: np.ndarray  # H×W uint8 0..255 alpha at the input's size
    elements: list[ElementMask] = field(default_factory=list)


class Segmenter(ABC):
    """Turns an H×W×3 uint8 RGB image into a `Segmentation`; loads its models in `__init__`."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abstractmethod
    def segment(self, image: np.ndarray) -> Segmentation: ...

    def warm(self) -> None:  # noqa: B027 - a hook: most segmenters have nothing left once loaded
        """Pay now what the first call would (models load in `__init__`; see `MattingSegmenter.warm`)."""


def register(cls: type[Segmenter]) -> type[Segmenter]:
    """Class decorator: make a segmenter available by its `name`."""
    REGISTRY[cls.name] = cls
    return cls


def segmenter_class(name: str) -> type[Segmenter]:
    module = _MODULES.get(name)
    if module is None:
        raise KeyError(f"no segmenter named {name!r}; known: {', '.join(sorted(_MODULES))}")
    if name not in REGISTRY:
        importlib.import_module(f"segflow_engine.segmenters.{module}")
    return REGISTRY[name]


def get_segmenter(name: str) -> Segmenter:
    """The process-wide instance of segmenter `name`, created (and its models loaded) on first use."""
    instance = _INSTANCES.get(name)
    if instance is not None:
        return instance
    cls = segmenter_class(name)
    with _INSTANCES_LOCK:
        instance = _INSTANCES.get(name)
        if instance is None:
            instance = cls()
            _INSTANCES[name] = instance
    return instance


S = TypeVar("S", bound=Segmenter)


def get_typed(name: str, cls: type[S]) -> S:
    """`get_segmenter(name)` for callers that use a model's own methods (the person mask's pose landmarks)."""
    instance = get_segmenter(name)
    if not isinstance(instance, cls):
        raise TypeError(f"segmenter {name!r} is a {type(instance).__name__}, not a {cls.__name__}")
    return instance


def known_segmenters() -> list[str]:
    return sorted(_MODULES)
