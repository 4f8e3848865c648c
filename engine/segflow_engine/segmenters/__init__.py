"""Segmenters: one base class, one module per model family, a registry from name to class."""

from __future__ import annotations

from segflow_engine.segmenters.base import REGISTRY, ElementMask, Segmentation, Segmenter, get_segmenter

__all__ = ["REGISTRY", "ElementMask", "Segmentation", "Segmenter", "get_segmenter"]
