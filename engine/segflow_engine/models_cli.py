"""`segflow models install|check`: install the engine's model weights from the registries, or check them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_command", metavar="{install,check}")
    install = sub.add_parser(
        "install",
        help="install the ISNet weights (npm), check mediapipe's models, compile pymatting's kernels",
    )
    install.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="model folder (default: $SEGFLOW_MODEL_DIR or <venv>/share/segflow/models)",
    )
    install.add_argument(
        "--from-tarball",
        type=Path,
        default=None,
        metavar="TGZ",
        help="use an already fetched `npm pack @imgly/background-removal-data@1.4.5` tarball",
    )
    install.add_argument("--force", action="store_true", help="rebuild even when the weights are present")
    check = sub.add_parser("check", help="exit 0 when every model the engine needs is installed")
    check.add_argument("--dir", type=Path, default=None, help="model folder to check")
    check.add_argument("--verify", action="store_true", help="also verify the ISNet file's sha256")


def _compile_matting() -> float:
    """Compile RefineMask's numba kernels once at install, so no engine start or first call pays for it."""
    import time

    from segflow_engine.segmenters.matting import MattingSegmenter

    started = time.monotonic()
    MattingSegmenter().warm()
    return time.monotonic() - started


def run(args: argparse.Namespace) -> int:
    from segflow_engine import models

    command = getattr(args, "models_command", None)
    if command == "install":
        try:
            report = models.install(args.dir, tarball=args.from_tarball, force=args.force)
        except models.ModelsNotInstalledError as exc:
            print(f"segflow models install: {exc.message}", file=sys.stderr)
            return 1
        print(f"ISNet: {report.action} ({report.seconds:.1f} s)")
        problems = models.missing_models(args.dir)
        for problem in problems:
            print(f"segflow models install: {problem}", file=sys.stderr)
        if problems:
            return 1
        print(f"mediapipe {models.MEDIAPIPE_VERSION} models: present in {models.mediapipe_root()}")
        print(f"pymatting kernels: compiled ({_compile_matting():.1f} s; numba keeps them)")
        return 0
    if command == "check":
        problems = models.missing_models(args.dir, verify_hash=args.verify)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(models.SETUP_HINT, file=sys.stderr)
            return 1
        print(f"all models present in {models.isnet_path(args.dir).parent} and {models.mediapipe_root()}")
        return 0
    print("usage: segflow models {install,check}", file=sys.stderr)
    return 2
