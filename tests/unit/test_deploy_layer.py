"""scripts/build_layer.py: the layer zip FC mounts on /opt (code under python/)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO_ROOT


def load_builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_layer", REPO_ROOT / "scripts" / "build_layer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layer") / "segflow-layer.zip"
    assert load_builder().main(["--out", str(out)]) == 0
    return out


def test_layer_holds_every_layer_module_under_python(layer: Path) -> None:
    names = set(zipfile.ZipFile(layer).namelist())
    for path in (REPO_ROOT / "shared" / "segflow").rglob("*.py"):
        if "__pycache__" not in path.parts:
            assert f"python/segflow/{path.relative_to(REPO_ROOT / 'shared' / 'segflow').as_posix()}" in names
    assert "python/segflow/storage/oss.py" in names and "python/segflow/py.typed" in names


def test_layer_has_no_tests_engine_caches_or_compiled_files(layer: Path) -> None:
    names = zipfile.ZipFile(layer).namelist()
    assert all(name.startswith("python/") for name in names)
    assert not [n for n in names if "segflow_engine" in n or "/tests/" in n or n.startswith("python/tests")]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so"))]


def test_layer_is_reproducible(layer: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    load_builder().main(["--out", str(again)])
    assert again.read_bytes() == layer.read_bytes()


def test_layer_imports_from_the_zip_alone(layer: Path, tmp_path: Path) -> None:
    """As on FC: only /opt/python on the path (oss2 comes from the runtime, so it is not imported)."""
    zipfile.ZipFile(layer).extractall(tmp_path)
    root = str(tmp_path / "python")
    code = (
        "import segflow.settings, segflow.events, segflow.storage, segflow.logs, segflow.client, requests;"
        f"assert segflow.__file__.startswith({root!r}), segflow.__file__;"
        f"assert requests.__file__.startswith({root!r}), requests.__file__"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        env={"PYTHONPATH": str(tmp_path / "python")},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()


def test_no_vendor_leaves_only_segflow(tmp_path: Path) -> None:
    out = tmp_path / "slim.zip"
    load_builder().main(["--out", str(out), "--no-vendor"])
    assert {name.split("/")[1] for name in zipfile.ZipFile(out).namelist()} == {"segflow"}
