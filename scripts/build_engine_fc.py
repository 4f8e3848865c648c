"""Build the engine's Function Compute package: `make engine-fc` → dist/segflow-engine-fc.zip.

A code package for the custom runtime `custom.debian10` (CPython 3.10.9 at /var/fc/lang/python3.10, Debian 10,
glibc 2.28, x86_64). FC unpacks it at /code:

    bootstrap       starts the engine on 0.0.0.0:${SEGFLOW_ENGINE_PORT:-9000} (`python -m segflow_engine.fc`)
    manifest.json   what the package serves and holds: actions, components, distributions, weights
    python/         the only entry of PYTHONPATH: segflow_engine, the segflow modules it imports, and the
                    third-party packages of scripts/engine-fc-requirements.txt the chosen actions need
    models/         the ISNet weights (`segflow models install`'s file, sha256 checked), unless
                    --no-weights: then SEGFLOW_MODEL_DIR must name a copy mounted from OSS

`--actions` (action and group names of `segflow_engine.served`, default all) chooses what the package
serves: `--actions cutout` holds ISNet and onnxruntime and no MediaPipe; the bootstrap tells the engine
(`SEGFLOW_ENGINE_ACTIONS`), which refuses the others as the service does.

Third-party packages are the cp310 manylinux wheels PyPI publishes for glibc <= 2.28 (`pip download
--platform … --python-version 3.10 --implementation cp --only-binary=:all:`, cached in
build/engine-fc/wheels),
installed with `pip install --target --no-deps --no-compile`: nothing is compiled on this machine. With a
Python 3.10 at hand (PYTHON310, python3.10 or pyenv's) every module gets its cpython-310 bytecode,
hash-based and unchecked as in `make layer`, so a new instance does not compile numpy or matplotlib again.
The zip is reproducible (sorted entries, fixed times and modes) and must stay under FC's 500 MB limit for a
code package uploaded by the console, Serverless Devs or OSS.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = REPO_ROOT / "scripts" / "engine-fc-requirements.txt"
DEFAULT_OUT = REPO_ROOT / "dist" / "segflow-engine-fc.zip"
WHEEL_CACHE = REPO_ROOT / "build" / "engine-fc" / "wheels"
SOURCE_ROOTS = {"segflow": REPO_ROOT / "shared", "segflow_engine": REPO_ROOT / "engine"}
ZIP_LIMIT_BYTES = (
    500 * 1000 * 1000
)  # fc-engine.md §3: code package by console, dev tools or OSS (MB read as 10^6)
BASE = "base"
PYTHON = "3.10"
# custom.debian10 has glibc 2.28: manylinux_2_28 and every older manylinux tag run there. pip takes each tag
# literally (it does not widen manylinux_2_28 to older ones), so all are listed.
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(28, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
)
WEIGHT_COMPONENT = "isnet"
# Distributions PyPI publishes as an sdist only. They are pure Python, so `pip wheel` makes their wheel from
# the sdist here without compiling anything (checked: the wheel must be `none-any`).
FROM_SDIST = frozenset({"oss2"})


class PackageError(Exception):
    """The package cannot be built as asked."""


@dataclass(frozen=True)
class Pin:
    """One line of scripts/engine-fc-requirements.txt."""

    name: str
    version: str
    component: str

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


def _load(module: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise PackageError(f"cannot load {path}")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    return loaded


def _served() -> ModuleType:
    """`segflow_engine.served` from the checkout (it needs only the layer's catalogue)."""
    for root in SOURCE_ROOTS.values():
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
    import segflow_engine.served as served

    return served


def read_pins(path: Path = REQUIREMENTS) -> list[Pin]:
    pins = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        requirement, _, comment = raw.partition("#")
        if not requirement.strip():
            continue
        name, sep, version = requirement.strip().partition("==")
        component = comment.split()[0] if comment.split() else ""
        if not sep or not version or not component:
            raise PackageError(f"{path.name}:{number}: write `name==version  # component`, got {raw!r}")
        pins.append(Pin(name.strip(), version.strip(), component))
    return pins


def pins_for(components: frozenset[str], pins: Sequence[Pin]) -> list[Pin]:
    """The distributions every action needs, and those of the given components."""
    return [pin for pin in pins if pin.component == BASE or pin.component in components]


def _pip_platform_args() -> list[str]:
    args = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    return [*args, "--python-version", PYTHON, "--implementation", "cp", "--only-binary=:all:", "--no-deps"]


def _pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise PackageError(f"pip {args[0]} failed:\n{done.stdout}{done.stderr}")


def download_wheels(pins: Sequence[Pin], cache: Path) -> None:
    """Fetch the wheels from PyPI into `cache`, unless it holds them all already (`make test` fills it, so
    a build, and the tests that build, need no network)."""
    missing = [pin for pin in pins if _cached_wheel(pin, cache) is None]
    binary = [pin.requirement for pin in missing if pin.name not in FROM_SDIST]
    if binary:
        cache.mkdir(parents=True, exist_ok=True)
        _pip("download", "--dest", str(cache), *_pip_platform_args(), *binary)
    for pin in (pin for pin in missing if pin.name in FROM_SDIST):
        cache.mkdir(parents=True, exist_ok=True)
        _pip("wheel", "--no-deps", "--no-binary", pin.name, "--wheel-dir", str(cache), pin.requirement)
        wheel = _cached_wheel(pin, cache)
        if wheel is None or not wheel.name.endswith("-none-any.whl"):
            raise PackageError(f"{pin.requirement} did not build into a pure Python wheel: {wheel}")


def _cached_wheel(pin: Pin, cache: Path) -> Path | None:
    wanted = (pin.name.lower().replace("-", "_").replace(".", "_"), pin.version)
    for wheel in sorted(cache.glob("*.whl")):
        name, version = wheel.name.split("-")[:2]
        if (name.lower().replace(".", "_"), version) == wanted:
            return wheel
    return None


def install_wheels(pins: Sequence[Pin], cache: Path, target: Path) -> None:
    """Unpack the wheels into `target`, as pip installs them, without compiling anything."""
    _pip(
        "install",
        "--target",
        str(target),
        "--no-index",
        "--find-links",
        str(cache),
        "--no-compile",
        *_pip_platform_args(),
        *(pin.requirement for pin in pins),
    )
    # Console scripts name this machine's interpreter in their shebang: nothing on FC runs them.
    shutil.rmtree(target / "bin", ignore_errors=True)


def engine_modules() -> dict[str, Path]:
    """Every module of segflow_engine and the segflow modules they import, directly or lazily, by file
    name under python/ (the import closure `make layer` computes, started from the engine)."""
    layer_builder = _load("build_layer", REPO_ROOT / "scripts" / "build_layer.py")
    pending = [
        (".".join(path.relative_to(SOURCE_ROOTS["segflow_engine"]).with_suffix("").parts), path)
        for path in sorted((SOURCE_ROOTS["segflow_engine"] / "segflow_engine").rglob("*.py"))
    ]
    found = {name.removesuffix(".__init__"): path for name, path in pending}
    while pending:
        module, path = pending.pop()
        is_package = path.name == "__init__.py"
        source = path.read_text(encoding="utf-8")
        for name in layer_builder.imported_names(
            source, module.removesuffix(".__init__"), is_package=is_package
        ):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):
                wanted = ".".join(parts[:depth])
                located = _source_file(wanted)
                if located is not None and wanted not in found:
                    found[wanted] = located
                    pending.append((wanted, located))
    return {
        path.relative_to(SOURCE_ROOTS[name.split(".")[0]]).as_posix(): path for name, path in found.items()
    }


def _source_file(name: str) -> Path | None:
    root = SOURCE_ROOTS.get(name.split(".")[0])
    if root is None:
        return None
    relative = Path(*name.split("."))
    for candidate in (root / relative / "__init__.py", root / relative.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def weight_files(components: frozenset[str], *, include: bool) -> dict[str, Path]:
    """`models/<file>` → the installed file, checked against its pinned size and sha256."""
    if WEIGHT_COMPONENT not in components or not include:
        return {}
    _served()
    from segflow_engine import models

    path = models.isnet_path()
    if not path.is_file() or path.stat().st_size != models.ISNET_SIZE or _sha256(path) != models.ISNET_SHA256:
        raise PackageError(f"ISNet weights missing or damaged at {path}: run `make models` (or --no-weights)")
    return {f"models/{path.name}": path}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def bootstrap_text(actions: Sequence[str]) -> str:
    """The executable FC starts (customRuntimeConfig.command, or /code/bootstrap by default)."""
    return f"""#!/bin/sh
# The segflow engine as a Function Compute web function (custom.debian10), written by
# scripts/build_engine_fc.py. FC's custom runtime expects an HTTP server on 0.0.0.0 at the configured port
# (customRuntimeConfig.port, default 9000), ready within 120 s. PYTHONPATH is this package only, and -S keeps
# any site-packages of the interpreter out.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=/var/fc/lang/python3.10/bin/python3
if [ ! -x "$python" ]; then
  # Outside FC (a test on this machine): the first python3.10 on PATH.
  python=$(command -v python3.10 || true)
fi
if [ -z "$python" ]; then
  echo "bootstrap: no Python 3.10 (custom.debian10 has /var/fc/lang/python3.10)" >&2
  exit 1
fi
export PYTHONPATH="$here/python"
export SEGFLOW_ENGINE_ACTIONS="{",".join(actions)}"
export SEGFLOW_MODEL_DIR="${{SEGFLOW_MODEL_DIR:-$here/models}}"
exec "$python" -S -m segflow_engine.fc --port "${{SEGFLOW_ENGINE_PORT:-9000}}" "$@"
"""


def manifest(
    actions: Sequence[str], components: frozenset[str], pins: Sequence[Pin], weights: dict[str, Path]
) -> dict[str, object]:
    """What the package serves and holds; no date, so the zip stays reproducible."""
    model_files = {
        name: {"bytes": path.stat().st_size, "sha256": _sha256(path)}
        for name, path in sorted(weights.items())
    }
    return {
        "package": "segflow-engine-fc",
        "runtime": "custom.debian10",
        "python": PYTHON,
        "actions": list(actions),
        "components": sorted(components),
        "distributions": {pin.name: pin.version for pin in pins},
        "models": model_files
        or f"not included: SEGFLOW_MODEL_DIR must hold {', '.join(_weights(components))}",
        "start": "./bootstrap (SEGFLOW_ENGINE_PORT, default 9000)",
    }


def _weights(components: frozenset[str]) -> list[str]:
    _served()
    from segflow_engine import models

    return [models.ISNET_FILE] if WEIGHT_COMPONENT in components else []


def compile_bytecode(python_dir: Path, python310: str) -> None:
    """cpython-310 bytecode for every module, hash-based and unchecked (valid whatever the unpacked files'
    times), with /code/python paths in tracebacks; a fixed hash seed keeps the zip reproducible."""
    # One process: parallel workers marshal some constants differently (interned strings), and the zip must
    # not change from one build to the next.
    command = [python310, "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash"]
    command += ["-s", str(python_dir.parent), "-p", "/code", str(python_dir)]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800, env=env)
    # compileall exits 1 when a file does not compile (a wheel's Python 2 test data): those stay source.
    if done.returncode not in (0, 1):
        raise PackageError(f"compileall failed:\n{done.stdout}{done.stderr}")


FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def write_zip(out: Path, staging: Path) -> list[str]:
    """Every file under `staging`, sorted, with fixed times and modes (0755 when executable, else 0644)."""
    files = sorted(
        (path.relative_to(staging).as_posix(), path) for path in staging.rglob("*") if path.is_file()
    )
    tmp = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in files:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3  # Unix: unzip (and FC) apply the mode below
            mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.external_attr = (0o100000 | mode) << 16
            info.file_size = path.stat().st_size  # known up front: no zip64 records for small files
            with path.open("rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)
    tmp.replace(out)
    return [name for name, _ in files]


@dataclass(frozen=True)
class Built:
    out: Path
    actions: list[str]
    files: int
    bytes: int
    unpacked_bytes: int
    bytecode: bool


def build(
    out: Path,
    spec: str = "all",
    *,
    weights: bool = True,
    python310: str | None = None,
    bytecode: bool = True,
    wheel_cache: Path = WHEEL_CACHE,
) -> Built:
    """Write the package for the actions `spec` names; `PackageError` when it cannot be built or is too
    large for FC."""
    served = _served()
    chosen = served.in_order(served.parse_actions(spec))
    components = served.needs(chosen)
    pins = pins_for(components, read_pins())
    models = weight_files(components, include=weights)
    download_wheels(pins, wheel_cache)
    interpreter = (
        (python310 or _load("build_layer", REPO_ROOT / "scripts" / "build_layer.py").find_python310())
        if bytecode
        else None
    )
    with tempfile.TemporaryDirectory(prefix="segflow-engine-fc-") as tmp:
        staging = Path(tmp) / "code"
        install_wheels(pins, wheel_cache, staging / "python")
        for name, path in engine_modules().items():
            (staging / "python" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / "python" / name)
        for name, path in models.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, staging / name)
        bootstrap = staging / "bootstrap"
        bootstrap.write_text(bootstrap_text(chosen), encoding="utf-8")
        bootstrap.chmod(0o755)
        document = manifest(chosen, components, pins, models)
        (staging / "manifest.json").write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        if interpreter is not None:
            compile_bytecode(staging / "python", interpreter)
        unpacked = sum(path.stat().st_size for path in staging.rglob("*") if path.is_file())
        out.parent.mkdir(parents=True, exist_ok=True)
        names = write_zip(out, staging)
    size = out.stat().st_size
    if size > ZIP_LIMIT_BYTES:
        raise PackageError(f"{out} is {size / 2**20:.0f} MiB, over FC's 500 MB code package limit")
    return Built(out, chosen, len(names), size, unpacked, interpreter is not None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--actions",
        default="all",
        help="comma list of actions and groups (cutout, people, matting, video, picwish, all; default all)",
    )
    parser.add_argument(
        "--no-weights",
        action="store_true",
        help="leave the ISNet weights out (mount them from OSS and point SEGFLOW_MODEL_DIR at them)",
    )
    parser.add_argument("--python310", help="the Python 3.10 that compiles the bytecode (default: found)")
    parser.add_argument("--no-bytecode", action="store_true", help="ship sources only")
    parser.add_argument(
        "--download-only",
        action="store_true",
        help=f"only fetch every pinned wheel into {WHEEL_CACHE.relative_to(REPO_ROOT)} (make test does)",
    )
    args = parser.parse_args(argv)
    try:
        if args.download_only:
            download_wheels(read_pins(), WHEEL_CACHE)
            print(f"build_engine_fc: wheels ready in {WHEEL_CACHE}")
            return 0
        built = build(
            args.out,
            args.actions,
            weights=not args.no_weights,
            python310=args.python310,
            bytecode=not args.no_bytecode,
        )
    except PackageError as error:
        print(f"build_engine_fc: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # a ConfigError from an unknown action name
        print(f"build_engine_fc: {error}", file=sys.stderr)
        return 2
    print(
        f"{built.out}: {built.files} files, {built.bytes / 2**20:.0f} MiB "
        f"({built.unpacked_bytes / 2**20:.0f} MiB unpacked, limit 500 MB zipped), "
        f"serves {', '.join(built.actions)}"
        + ("" if built.bytecode else "; no Python 3.10 found: sources only (set PYTHON310)")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
