"""Build the Function Compute layer zip: `make layer` → dist/segflow-layer.zip.

The layer holds exactly what the two handlers import, directly or lazily (an `import` inside a function
counts): starting from `functions/*/index.py`, every `segflow.*` module reachable through import
statements, with the `__init__.py` of each package on the way. Nothing else of `shared/segflow` ships;
the local tools (`segflow_cli`) and the engine never do.

Third-party packages are not vendored: the layer relies on the packages FC's python3.10 runtime has
built in, pinned in `scripts/fc-python310-builtins.txt` (what `make test-fc` installs to prove it). The
build fails when a handler path imports a third-party package that is not in that list, or a first-party
package that is not the layer's (`segflow_cli`, `segflow_engine`).

FC mounts a layer on /opt and puts /opt/python on sys.path, so the code sits under `python/` in the zip.
Every new instance unpacks the layer afresh, so without bytecode in the zip each cold start compiles every
module again; the build therefore compiles the modules with a Python 3.10 (the runtime's version: same
bytecode magic for every 3.10.x) into `__pycache__/*.cpython-310.pyc`, hash-based and
unchecked (PEP 552: valid whatever the unpacked files' times; the layer is read-only, so the source is not
read again at import). Without a Python 3.10 here the zip
ships sources only, and says so. The zip is reproducible: sorted entries, fixed times.

Publish it with (Serverless Devs, installed in .venv by `make setup`)
    .venv/bin/s cli fc3 layer publish --code dist/segflow-layer.zip --layer-name segflow \
        --compatible-runtime python3.10 --region cn-shanghai -a default
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LAYER_ROOT = REPO_ROOT / "shared"
LAYER_PACKAGE = "segflow"
FUNCTIONS_DIR = REPO_ROOT / "functions"
BUILTINS_FILE = REPO_ROOT / "scripts" / "fc-python310-builtins.txt"
FIRST_PARTY = frozenset({"segflow", "segflow_cli", "segflow_engine"})
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
# Import names of the distributions in BUILTINS_FILE whose import name differs from the project name.
IMPORT_NAMES = {"pillow": "PIL"}


class LayerError(Exception):
    """The handlers' imports cannot be served by the layer and the runtime's built-ins."""


def runtime_builtins(path: Path = BUILTINS_FILE) -> dict[str, str]:
    """Import name → pinned version of each package the FC python3.10 runtime ships and the layer uses."""
    pinned: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, version = line.partition("==")
        project = name.strip().lower()
        pinned[IMPORT_NAMES.get(project, project)] = version.strip()
    return pinned


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported_names(source: str, module: str, *, is_package: bool) -> Iterator[str]:
    """Absolute names of every module `source` imports anywhere (functions included), except under
    `if TYPE_CHECKING:` (typing only, never executed). `from a import b` yields `a` and `a.b` (b may be
    a submodule; callers keep the names that are modules)."""
    tree = ast.parse(source)
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _module_file(name: str) -> Path | None:
    """The file of layer module `name` under shared/, or None if it is not a module there."""
    relative = Path(*name.split("."))
    for candidate in (LAYER_ROOT / relative / "__init__.py", LAYER_ROOT / relative.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _parents(name: str) -> Iterable[str]:
    parts = name.split(".")
    return (".".join(parts[:i]) for i in range(1, len(parts)))


def import_closure(entry_points: Sequence[Path]) -> tuple[dict[str, Path], set[str]]:
    """(layer module → file, third-party top-level names) reachable from the entry point files."""
    modules: dict[str, Path] = {}
    third_party: set[str] = set()
    pending: list[tuple[str, Path]] = [(f"<{path.parent.name}>", path) for path in entry_points]
    while pending:
        module, path = pending.pop()
        is_package = path.name == "__init__.py"
        for name in imported_names(path.read_text(encoding="utf-8"), module, is_package=is_package):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            if top not in FIRST_PARTY:
                third_party.add(top)
                continue
            if top != LAYER_PACKAGE:
                raise LayerError(f"{_shown(path)} imports {name}, which never ships to FC")
            for wanted in (*_parents(name), name):
                found = _module_file(wanted)
                if found is not None and wanted not in modules:
                    modules[wanted] = found
                    pending.append((wanted, found))
    return modules, third_party


def handler_files(functions_dir: Path = FUNCTIONS_DIR) -> list[Path]:
    return sorted(functions_dir.glob("*/index.py"))


def layer_entries() -> list[tuple[str, Path]]:
    """(name in the zip, file on disk), sorted by name; raises `LayerError` for an unservable import."""
    modules, third_party = import_closure(handler_files())
    missing = sorted(third_party - set(runtime_builtins()))
    if missing:
        raise LayerError(
            f"the handlers import {', '.join(missing)}, which FC's python3.10 runtime does not ship "
            f"(see {BUILTINS_FILE.relative_to(REPO_ROOT)})"
        )
    return sorted((f"python/{path.relative_to(LAYER_ROOT).as_posix()}", path) for path in modules.values())


def find_python310() -> str | None:
    """A Python 3.10 interpreter: $PYTHON310, `python3.10` on PATH, or pyenv's 3.10.x."""
    candidates = [os.environ.get("PYTHON310", ""), "python3.10"]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(str(p) for p in pyenv_root.glob("versions/3.10*/bin/python3.10"))
    for candidate in filter(None, candidates):
        executable = shutil.which(candidate) or candidate
        try:
            done = subprocess.run(
                [executable, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 10))"],
                capture_output=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return executable
    return None


def compile_bytecode(
    entries: list[tuple[str, Path]], python310: str, staging: Path
) -> list[tuple[str, Path]]:
    """The entries plus their `__pycache__/<name>.cpython-310.pyc`, compiled by `python310` in `staging`
    with hash-based invalidation and /opt paths in tracebacks.

    Unchecked hashes: a layer is unpacked read-only and never changes under the runtime, so making each
    import read and hash the source again (checked-hash) would buy nothing and costs every cold start
    about half a millisecond. Hash-based (not timestamp) pycs keep the zip reproducible."""
    for name, path in entries:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    command = [python310, "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash"]
    command += ["-s", str(staging), "-p", "/opt", str(staging / "python")]
    # A fixed hash seed: frozenset constants are marshalled in hash order, and the zip must be reproducible.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(command, check=True, capture_output=True, timeout=300, env=env)
    compiled = sorted(
        (path.relative_to(staging).as_posix(), path) for path in staging.rglob("*.cpython-310.pyc")
    )
    return sorted([*entries, *compiled])


def build(out: Path, *, python310: str | None = None, bytecode: bool = True) -> list[str]:
    """Write the zip; returns its entry names. Compiles bytecode when a Python 3.10 is found."""
    out.parent.mkdir(parents=True, exist_ok=True)
    entries = layer_entries()
    interpreter = (python310 or find_python310()) if bytecode else None
    with tempfile.TemporaryDirectory(prefix="segflow-layer-") as staging:
        if interpreter is not None:
            entries = compile_bytecode(entries, interpreter, Path(staging))
        elif bytecode:
            print(
                "build_layer: no Python 3.10 found (set PYTHON310): the layer ships sources only, and FC "
                "will compile every module at each cold start",
                file=sys.stderr,
            )
        return _write_zip(out, entries)


def _write_zip(out: Path, entries: list[tuple[str, Path]]) -> list[str]:
    tmp = out.with_suffix(out.suffix + ".tmp")
    names = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
            names.append(name)
    tmp.replace(out)
    return names


_SAFE = re.compile(r"^[\w./-]+$")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "segflow-layer.zip")
    parser.add_argument("--python310", help="the Python 3.10 that compiles the bytecode (default: found)")
    parser.add_argument("--no-bytecode", action="store_true", help="ship sources only")
    args = parser.parse_args(argv)
    try:
        names = build(args.out, python310=args.python310, bytecode=not args.no_bytecode)
    except LayerError as error:
        print(f"build_layer: {error}", file=sys.stderr)
        return 1
    size = args.out.stat().st_size
    print(f"{args.out}: {len(names)} files, {size / 1024:.0f} KiB")
    shown = args.out if _SAFE.match(str(args.out)) else f"'{args.out}'"
    print(
        f"publish: .venv/bin/s cli fc3 layer publish --code {shown} --layer-name segflow "
        "--compatible-runtime python3.10 --region cn-shanghai -a default",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
