"""Build the Function Compute layer zip: `make layer` → dist/segflow-layer.zip.

FC mounts a layer on /opt and puts /opt/python on sys.path, so the code sits under `python/` in the zip:
`python/segflow/…` (the layer package, no tests, no engine) and, unless `--no-vendor`, the pure-Python
parts of `requests` and its dependencies (compiled speed-ups are left out: they are built for this
machine's Python, and every one of these packages falls back to pure Python). oss2 is not vendored:
the FC Python runtime ships it. The zip is reproducible: sorted entries, fixed timestamps.

Publish it with
    s layer publish --code dist/segflow-layer.zip --layer-name segflow --compatible-runtime python3.10
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIR = REPO_ROOT / "shared" / "segflow"
VENDORED = ("requests", "urllib3", "idna", "certifi", "charset_normalizer")
FIXED_TIME = (2020, 1, 1, 0, 0, 0)
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".so", ".pyd")
SKIPPED_DIRS = {"__pycache__", "tests"}


def _files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        skipped_dir = bool(SKIPPED_DIRS & set(path.relative_to(root).parts))
        if path.is_file() and not skipped_dir and path.suffix not in SKIPPED_SUFFIXES:
            yield path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"build_layer: {name} is not installed here; install it or use --no-vendor")
    return Path(next(iter(spec.submodule_search_locations)))


def layer_entries(*, vendor: bool = True) -> list[tuple[str, Path]]:
    """(name in the zip, file on disk), sorted by name."""
    entries = [(f"python/segflow/{p.relative_to(PACKAGE_DIR).as_posix()}", p) for p in _files(PACKAGE_DIR)]
    if vendor:
        for name in VENDORED:
            package = _package_dir(name)
            entries += [(f"python/{name}/{p.relative_to(package).as_posix()}", p) for p in _files(package)]
    return sorted(entries)


def build(out: Path, *, vendor: bool = True) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    names = []
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, path in layer_entries(vendor=vendor):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
            names.append(name)
    tmp.replace(out)
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist" / "segflow-layer.zip")
    parser.add_argument("--no-vendor", action="store_true", help="leave requests out (runtime provides it)")
    args = parser.parse_args(argv)
    names = build(args.out, vendor=not args.no_vendor)
    size = args.out.stat().st_size
    print(f"{args.out}: {len(names)} files, {size / 1024:.0f} KiB")
    print(
        f"publish: s layer publish --code {args.out} --layer-name segflow --compatible-runtime python3.10",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
