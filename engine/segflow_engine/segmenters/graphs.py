"""MediaPipe's legacy `solutions` graphs (bundled in mediapipe 0.10.21), imported lazily and quietly."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any


def solutions() -> Any:
    # The graphs log through absl/glog to stderr on creation; keep the engine's output readable.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mediapipe as mp

    module: ModuleType = mp.solutions
    return module


def selfie_segmentation(*, landscape: bool = False) -> Any:
    return solutions().selfie_segmentation.SelfieSegmentation(model_selection=1 if landscape else 0)


def pose(*, static_image_mode: bool = True) -> Any:
    # Only model_complexity=1 ships in the wheel: 0 and 2 try to download their .tflite and fail offline.
    return solutions().pose.Pose(
        static_image_mode=static_image_mode,
        model_complexity=1,
        enable_segmentation=True,
        smooth_segmentation=not static_image_mode,
        min_detection_confidence=0.5,
    )


def face_detection(*, full_range: bool = True, min_confidence: float = 0.5) -> Any:
    return solutions().face_detection.FaceDetection(
        model_selection=1 if full_range else 0, min_detection_confidence=min_confidence
    )


def face_mesh(*, max_faces: int = 1) -> Any:
    return solutions().face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=max_faces, min_detection_confidence=0.5
    )
