"""Where the engine's model weights live, how they are installed from the registries, and the start-up check.

MediaPipe's `.tflite` files ship inside the `mediapipe==0.10.21` wheel (pip installs them). The ISNet (DIS)
salient-object weights ship as 4 MiB chunks inside the npm package `@imgly/background-removal-data`; `install`
runs `npm pack`, checks every chunk against its sha256 name and size, and joins them into one ONNX file whose
size and sha256 are pinned here. Nothing is ever downloaded at run time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import ConfigError
from segflow_engine import served

ENV_MODEL_DIR = "SEGFLOW_MODEL_DIR"
SETUP_HINT = "run `make setup` (or `segflow models install`) in the segflow checkout"

ISNET_NPM_PACKAGE = "@imgly/background-removal-data"
ISNET_NPM_VERSION = "1.4.5"
ISNET_RESOURCE = "/models/medium"
ISNET_FILE = "isnet-medium.onnx"
ISNET_SIZE = 88_188_479
ISNET_SHA256 = "b6e8497ba978a6f5fbb647e419d2696cd80df5a23cb6a8ea532021911bd76acb"

# The MediaPipe graphs the segmenters use; all bundled in the 0.10.21 wheel (later releases ship none).
MEDIAPIPE_VERSION = "0.10.21"
MEDIAPIPE_FILES = (
    "modules/selfie_segmentation/selfie_segmentation.tflite",
    "modules/pose_landmark/pose_landmark_full.tflite",
    "modules/pose_detection/pose_detection.tflite",
    "modules/face_detection/face_detection_short_range.tflite",
    "modules/face_detection/face_detection_full_range_sparse.tflite",
    "modules/face_landmark/face_landmark_with_attention.tflite",
)

_CHUNK_READ = 1 << 20


class ModelsNotInstalledError(ConfigError):
    """The engine's model weights are missing or damaged; `make setup` installs them."""

    default_code = "ModelsNotInstalled"


@dataclass(frozen=True)
class InstallReport:
    path: Path
    action: str  # "present" (already installed, verified) | "installed"
    seconds: float


def model_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$SEGFLOW_MODEL_DIR`, else `<sys.prefix>/share/segflow/models` (inside the virtual environment)."""
    env = os.environ if environ is None else environ
    configured = env.get(ENV_MODEL_DIR, "").strip()
    if configured:
        return Path(configured).expanduser()
    return Path(sys.prefix) / "share" / "segflow" / "models"


def isnet_path(directory: Path | None = None) -> Path:
    return (directory or model_dir()) / ISNET_FILE


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK_READ):
            digest.update(block)
    return digest.hexdigest()


def _isnet_ok(path: Path, *, verify_hash: bool) -> bool:
    if not path.is_file() or path.stat().st_size != ISNET_SIZE:
        return False
    return not verify_hash or _sha256_file(path) == ISNET_SHA256


def mediapipe_root() -> Path | None:
    """The installed mediapipe package folder, found without importing it (importing it takes a second)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def missing_models(
    directory: Path | None = None, *, verify_hash: bool = False, needs: frozenset[str] | None = None
) -> list[str]:
    """What is missing, one human-readable line per problem; empty when the engine can start. `needs` names
    the components to check (`segflow_engine.served`; default: what the served actions need)."""
    if needs is None:
        needs = served.needs(served.served_actions())
    problems: list[str] = []
    path = isnet_path(directory)
    if "isnet" in needs and not _isnet_ok(path, verify_hash=verify_hash):
        problems.append(f"ISNet weights missing or damaged: {path}")
    if "mediapipe" in needs:
        problems.extend(_missing_mediapipe())
    return problems


def _missing_mediapipe() -> list[str]:
    problems: list[str] = []
    root = mediapipe_root()
    if root is None:
        problems.append(f"mediapipe=={MEDIAPIPE_VERSION} is not installed")
    else:
        problems.extend(
            f"mediapipe model missing: {root / rel}" for rel in MEDIAPIPE_FILES if not (root / rel).is_file()
        )
    return problems


def check_installed(
    directory: Path | None = None, *, verify_hash: bool = False, needs: frozenset[str] | None = None
) -> None:
    """Raise `ModelsNotInstalledError` naming the setup command when anything the engine needs is missing."""
    problems = missing_models(directory, verify_hash=verify_hash, needs=needs)
    if problems:
        raise ModelsNotInstalledError("; ".join(problems) + f" — {SETUP_HINT}")


def _npm_pack(workdir: Path, npm: str) -> Path:
    executable = shutil.which(npm)
    if executable is None:
        raise ModelsNotInstalledError(f"`{npm}` (Node.js) is needed to fetch the ISNet weights from npm")
    spec = f"{ISNET_NPM_PACKAGE}@{ISNET_NPM_VERSION}"
    completed = subprocess.run(
        [executable, "pack", spec, "--silent", "--pack-destination", str(workdir)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    tarballs = sorted(workdir.glob("*.tgz"))
    if completed.returncode != 0 or not tarballs:
        raise ModelsNotInstalledError(
            f"`npm pack {spec}` failed (exit {completed.returncode}): {completed.stderr.strip()[-500:]}"
        )
    return tarballs[0]


def _join_chunks(tarball: Path, destination: Path) -> None:
    """Join the chunks dist/resources.json lists for `/models/medium`, checking each, into `destination`."""
    with tarfile.open(tarball, "r:gz") as archive:
        index_file = archive.extractfile("package/dist/resources.json")
        if index_file is None:
            raise ModelsNotInstalledError(f"{tarball.name} has no dist/resources.json")
        resource = json.load(index_file)[ISNET_RESOURCE]
        if int(resource["size"]) != ISNET_SIZE:
            raise ModelsNotInstalledError(f"{ISNET_RESOURCE} has size {resource['size']}, not {ISNET_SIZE}")
        whole = hashlib.sha256()
        with destination.open("wb") as out:
            expected_offset = 0
            for chunk in resource["chunks"]:
                start, end = (int(v) for v in chunk["offsets"])
                member = archive.extractfile(f"package/dist/{chunk['hash']}")
                if member is None or start != expected_offset:
                    raise ModelsNotInstalledError(f"chunk {chunk['hash']} missing or out of order")
                data = member.read()
                if len(data) != end - start or hashlib.sha256(data).hexdigest() != chunk["hash"]:
                    raise ModelsNotInstalledError(f"chunk {chunk['hash']} is damaged (size or sha256)")
                whole.update(data)
                out.write(data)
                expected_offset = end
    if whole.hexdigest() != ISNET_SHA256:
        raise ModelsNotInstalledError(f"joined ISNet file has sha256 {whole.hexdigest()}, not {ISNET_SHA256}")


def install(
    directory: Path | None = None,
    *,
    tarball: Path | None = None,
    npm: str = "npm",
    force: bool = False,
    log: Callable[[str], None] = print,
) -> InstallReport:
    """Install the ISNet weights into `directory` (default `model_dir()`); idempotent and quick when present.

    `tarball` uses an already fetched `npm pack` result instead of running npm (offline rebuilds, CI caches).
    """
    started = time.monotonic()
    target_dir = directory or model_dir()
    target = isnet_path(target_dir)
    if not force and _isnet_ok(target, verify_hash=True):
        log(f"ISNet weights already installed and verified: {target}")
        return InstallReport(target, "present", time.monotonic() - started)
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segflow-models-") as tmp:
        workdir = Path(tmp)
        if tarball is None:
            log(f"fetching {ISNET_NPM_PACKAGE}@{ISNET_NPM_VERSION} with npm pack …")
            tarball = _npm_pack(workdir, npm)
        log(f"joining {ISNET_RESOURCE} chunks from {tarball.name} (sizes and sha256 checked)")
        partial = target_dir / f".{ISNET_FILE}.partial-{os.getpid()}"
        try:
            _join_chunks(tarball, partial)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
    log(f"installed {target} ({ISNET_SIZE} bytes, sha256 {ISNET_SHA256[:16]}…)")
    return InstallReport(target, "installed", time.monotonic() - started)
