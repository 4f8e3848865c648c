"""The local engine: per-action latency, IoU on known-truth composites, video throughput, and the salient
cut-out against rembg running the same ISNet weights.

Baselines and how each figure is made: bench/README.md ("engine.py"). Needs the models (`make models`)
and, for the rembg row, `pip install --no-deps rembg pooch platformdirs jsonschema` in the same environment.
Run: `python bench/engine.py [--quick] [--json]`.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(__file__))
from _common import Row, emit, log, median, parse_args, setup_paths

setup_paths()

import numpy as np  # noqa: E402  (after the paths: numpy is the engine's, from the same venv)

IMAGE_ACTIONS = ("SegmentCommonImage", "SegmentBody", "SegmentHead", "SegmentHair", "ParseFace")
SIZES = (512, 1024)


def _perturbed(image: np.ndarray, rep: int, series: int = 0) -> np.ndarray:
    """A copy differing in one pixel per (repetition, series): the engine caches the ISNet mask of an
    image it has just seen (SegmentBody and the face actions reuse it), which would hide the model's
    cost from every action timed after the first on the same picture."""
    out = image.copy()
    out[0, series % out.shape[1], 0] ^= (rep % 255) + 1
    return out


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


# ------------------------------------------------------------------------------------ the model floor


def isnet_session() -> Callable[[], Any]:
    """One bare ISNet forward pass at 1024² with the engine's session settings, as a callable."""
    import onnxruntime as ort

    from segflow_engine import models
    from segflow_engine.segmenters import salient

    options = salient.session_options()
    session = ort.InferenceSession(str(models.isnet_path()), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    from tests.support import composites as c

    # A real picture scaled as the engine scales it (random noise runs slower: denormals).
    picture = c.person_composite("rocket", size=1024).image.astype(np.float32)
    x = np.ascontiguousarray(((picture - 128.0) / 256.0).transpose(2, 0, 1)[None])
    session.run(None, {name: x})
    return lambda: session.run(None, {name: x})


# ------------------------------------------------------------------------------------ latency


def action_latency(reps: int) -> list[Row]:
    """Every action at both sizes and the bare model, round-robin per repetition (machines are shared:
    interleaving spreads their noise over all series alike)."""
    from tests.support import composites as c

    from segflow_engine import actions

    floor_run = isnet_session()
    bases = {size: c.person_composite("rocket", size=size).image for size in SIZES}
    for action in IMAGE_ACTIONS:
        for size in SIZES:
            actions.run_image_action(action, {}, _png(_perturbed(bases[size], 254)), {})  # load models
    floor: list[float] = []
    samples: dict[tuple[str, int], list[float]] = {(a, s): [] for a in IMAGE_ACTIONS for s in SIZES}
    for rep in range(reps):
        floor.append(_timed(floor_run))
        for index, ((action, size), series) in enumerate(samples.items()):
            data = _png(_perturbed(bases[size], rep, index))
            series.append(_timed(lambda a=action, d=data: actions.run_image_action(a, {}, d, {})))
        log(f"engine: latency round {rep + 1}/{reps}")
    base = median(floor)
    rows = [Row("engine: bare ISNet forward pass at 1024² (floor)", f"{base:.0f} ms", "(baseline)", None)]
    for action in IMAGE_ACTIONS:
        per_size = {size: median(samples[action, size]) for size in SIZES}
        rows.append(
            Row(
                f"engine: {action} latency 512² / 1024² (PNG in, result encoded)",
                " / ".join(f"{per_size[s]:.0f} ms ({per_size[s] / base:.2f}×)" for s in SIZES),
                "(× bare ISNet 1024²)",
                None,
            )
        )
    return rows


# ------------------------------------------------------------------------------------ IoU


def iou_rows() -> list[Row]:
    from tests.support import composites as c

    from segflow_engine import actions
    from segflow_engine.segmenters.base import get_segmenter

    def alpha_of(action: str, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        output = actions.run_image_action(action, {}, _png(image), {})
        assert output.image is not None
        with Image.open(io.BytesIO(output.image)) as opened:
            return np.asarray(opened.convert("RGBA"))[..., 3]

    cases: list[tuple[str, Callable[[], Any], Callable[[np.ndarray], np.ndarray], float | None]] = [
        (
            "SegmentBody, person on a launch pad",
            lambda: c.person_composite("rocket"),
            lambda im: alpha_of("SegmentBody", im),
            0.98,
        ),
        (
            "SegmentBody, person over a coffee cup",
            lambda: c.person_composite("coffee"),
            lambda im: alpha_of("SegmentBody", im),
            0.96,
        ),
        (
            "SegmentCommonImage, logo on grass",
            lambda: c.object_composite("logo", "grass"),
            lambda im: alpha_of("SegmentCommonImage", im),
            0.97,
        ),
        (
            "SegmentCommonImage, bronze horse on gravel",
            lambda: c.object_composite("horse", "gravel", scale=0.8),
            lambda im: alpha_of("SegmentCommonImage", im),
            0.95,
        ),
        (
            "greenscreen keyer, one frame",
            lambda: c.green_screen_frame(),
            lambda im: get_segmenter("greenscreen").segment(im).mask,
            None,
        ),
        (
            "stamp segmenter, red seal on paper",
            lambda: c.stamp_image(),
            lambda im: get_segmenter("stamp").segment(im).mask,
            None,
        ),
    ]
    # Minimums: what the models' own tests hold the engine to
    # (tests/engine/functional/test_engine_models_*.py).
    rows = []
    for label, make, predict, minimum in cases:
        composite = make()
        score = c.iou(predict(composite.image), composite.truth)
        rows.append(
            Row(
                f"engine IoU: {label}",
                f"{score:.3f}",
                f"≥ {minimum:.2f} (models tests)" if minimum is not None else "(no target)",
                None if minimum is None else score >= minimum,
            )
        )
    return rows


# ------------------------------------------------------------------------------------ video


def video_rows(frames: int) -> list[Row]:
    from tests.support import composites as c

    from segflow_engine import actions, videoio

    rows = []
    with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
        src = Path(tmp) / "clip-720p.mp4"
        c.write_video(src, (f.image for f in c.person_clip_frames(frames, size=(1280, 720), step=6)), fps=25)
        t0 = time.perf_counter()
        videoio.process_video(src, Path(tmp) / "copy.mp4", lambda rgb: rgb[..., 1])
        io_fps = frames / (time.perf_counter() - t0)
        for action in ("SegmentVideoBody", "SegmentGreenScreenVideo"):
            dst = Path(tmp) / f"{action}.mp4"
            t0 = time.perf_counter()
            out = actions.run_video_action(action, {}, src, dst)
            seconds = time.perf_counter() - t0
            fps = out.frames / seconds
            log(f"engine: {action} 720p {fps:.1f} fps")
            rows.append(
                Row(
                    f"engine: {action} at 1280×720 ({out.frames} frames)",
                    f"{fps:.1f} frames/s = {fps / io_fps:.2f}× decode+encode alone ({io_fps:.0f} frames/s)",
                    "(no target)",
                    None,
                )
            )
    return rows


# ------------------------------------------------------------------------------------ rembg


def rembg_rows(reps: int) -> list[Row]:
    from tests.support import composites as c

    from segflow_engine import actions, models

    model = models.isnet_path()
    os.environ["U2NET_HOME"] = str(model.parent)  # rembg only loads custom models from under it
    try:
        import rembg
    except ImportError as exc:
        return [
            Row(
                "engine: SegmentCommonImage cut-out vs rembg (same ISNet)",
                f"not measured: {exc}",
                "(comparison)",
                None,
                "pip install --no-deps rembg pooch platformdirs jsonschema",
            )
        ]
    session = rembg.new_session("dis_custom", model_path=str(model))
    base = c.object_composite("horse", "gravel", size=1024, scale=0.8).image
    rembg.remove(_png(base), session=session)
    actions.run_image_action("SegmentCommonImage", {}, _png(_perturbed(base, 254)), {})
    ours, theirs = [], []
    for rep in range(reps):  # interleaved, so drift hits both alike
        data = _png(_perturbed(base, rep))
        ours.append(_timed(lambda d=data: actions.run_image_action("SegmentCommonImage", {}, d, {})))
        theirs.append(_timed(lambda d=data: rembg.remove(d, session=session)))
    mine, other = median(ours), median(theirs)
    return [
        Row(
            "engine: salient cut-out 1024² PNG→PNG, segflow vs rembg (same ISNet file)",
            f"{mine / other:.2f}× ({mine:.0f} vs {other:.0f} ms)",
            "(comparison)",
            None,
        )
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    reps = 2 if args.quick else 5
    from segflow_engine import models

    models.check_installed()
    rows: list[Row] = []
    log("engine: latency")
    rows += action_latency(reps)
    log("engine: IoU")
    rows += iou_rows()
    log("engine: video")
    rows += video_rows(20 if args.quick else 50)
    log("engine: rembg")
    rows += rembg_rows(reps)
    emit(rows, as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
