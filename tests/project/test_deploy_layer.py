"""scripts/build_layer.py: the layer zip FC mounts on /opt holds exactly what the handlers import.

FC docs ("Create a custom layer"): a layer's zip is unpacked under /opt, and for Python /opt/python is on
sys.path, so the code sits under `python/`. The runtime's built-in packages (oss2, Pillow, requests for
python3.10) are not shipped again: scripts/fc-python310-builtins.txt pins them.
"""

from __future__ import annotations

import importlib.util
import modulefinder
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


@pytest.fixture(scope="module")
def unzipped(layer: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("opt")
    zipfile.ZipFile(layer).extractall(root)
    return root / "python"


def zip_modules(layer: Path) -> set[str]:
    """Dotted names of the modules whose source the zip holds."""
    names = set()
    for name in zipfile.ZipFile(layer).namelist():
        assert name.startswith("python/") and name.endswith((".py", ".cpython-310.pyc")), name
        if name.endswith(".py"):
            dotted = name[len("python/") : -len(".py")].replace("/", ".")
            names.add(dotted.removesuffix(".__init__"))
    return names


STUBBED_IMPORT = (
    "import sys, types\n"
    "sys.modules.update({n: types.ModuleType(n) for n in ('oss2', 'requests')})\n"
    # Signatures name requests.Session and requests.Response, evaluated at definition time.
    "sys.modules['requests'].Session = sys.modules['requests'].Response = type('Stub', (), {})\n"
    "import index"
)


def python310() -> str:
    found = load_builder().find_python310()
    if found is None:
        pytest.skip("no Python 3.10 here (FC's runtime version): the layer is built without bytecode")
    return str(found)


def handler_closure(layer_python: Path) -> set[str]:
    """What the handlers import, found by the standard library's bytecode scanner (a second method,
    independent of the builder's AST walk): every `segflow` module, imports inside functions included."""
    third_party = ["oss2", "requests", "PIL", "urllib3"]
    found: set[str] = set()
    for function in ("on_upload", "collect_jobs"):
        finder = modulefinder.ModuleFinder(path=[str(layer_python), *sys.path], excludes=third_party)
        finder.run_script(str(REPO_ROOT / "functions" / function / "index.py"))
        found |= {name for name in finder.modules if name.split(".")[0] == "segflow"}
        missing_names, _maybe_attributes = finder.any_missing_maybe()
        missing = [name for name in missing_names if name.split(".")[0] == "segflow"]
        assert not missing, f"{function} imports modules the layer lacks: {missing}"
    return found


def test_layer_holds_exactly_what_the_handlers_import(layer: Path, unzipped: Path) -> None:
    """Nothing the handlers cannot import ships, and nothing they import is missing."""
    assert zip_modules(layer) == handler_closure(unzipped)


def test_local_tools_engine_and_tests_never_ship(layer: Path) -> None:
    names = zipfile.ZipFile(layer).namelist()
    assert {name.split("/")[1] for name in names} == {"segflow"}
    for moved in ("cli", "run", "invoke", "fccontext", "localbucket", "preview", "verify"):
        assert not [n for n in names if n.endswith((f"/{moved}.py", f"/{moved}.cpython-310.pyc"))], moved
    assert not [n for n in names if n.endswith(".so")]


def test_every_module_ships_python310_bytecode_that_fc_loads_without_compiling(
    layer: Path, unzipped: Path, tmp_path: Path
) -> None:
    """Each instance unpacks the layer afresh, so bytecode not in the zip is compiled at every cold
    start. The zip has one cpython-310 .pyc per module, hash-based and unchecked (PEP 552: flags 0b01 —
    the layer is read-only, so the source is never read again), and a Python 3.10 importing the handlers
    from a read-only copy uses every one of them."""
    interpreter = python310()
    names = zipfile.ZipFile(layer).namelist()
    sources = {n for n in names if n.endswith(".py")}
    compiled = {n for n in names if n.endswith(".pyc")}
    expected = {
        f"{n.rsplit('/', 1)[0]}/__pycache__/{n.rsplit('/', 1)[1][:-3]}.cpython-310.pyc" for n in sources
    }
    assert compiled == expected
    with zipfile.ZipFile(layer) as archive:
        flags = {n: int.from_bytes(archive.read(n)[4:8], "little") for n in compiled}
    assert set(flags.values()) == {0b01}, flags
    for function in ("on_upload", "collect_jobs"):
        done = subprocess.run(
            # The bare 3.10 here lacks the runtime's oss2 and requests: empty stand-ins are enough to import
            # (make test-fc runs the handlers for real with the runtime's versions).
            [interpreter, "-v", "-c", STUBBED_IMPORT],
            env={
                "PYTHONPATH": f"{unzipped}:{REPO_ROOT / 'functions' / function}",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        imported = [line for line in done.stderr.splitlines() if line.startswith("import 'segflow")]
        from_bytecode = [
            line
            for line in done.stderr.splitlines()
            if line.startswith("# code object from") and "/segflow/" in line and line.endswith(".pyc'")
        ]
        assert imported and len(from_bytecode) == len(imported), (function, imported, from_bytecode)


def test_a_handler_path_into_the_local_tools_or_a_foreign_package_is_refused(tmp_path: Path) -> None:
    builder = load_builder()
    leaky = tmp_path / "leaky" / "index.py"
    leaky.parent.mkdir()
    leaky.write_text("def handler(event, context):\n    from segflow_cli.localbucket import LocalBuckets\n")
    with pytest.raises(builder.LayerError, match=r"segflow_cli\.localbucket, which never ships"):
        builder.import_closure([leaky])
    foreign = tmp_path / "foreign" / "index.py"
    foreign.parent.mkdir()
    foreign.write_text("import numpy\nfrom segflow.services.deps import handler_deps\n")
    modules, third_party = builder.import_closure([foreign])
    assert "numpy" in third_party and "numpy" not in builder.runtime_builtins()
    assert "segflow.services.deps" in modules and "segflow.services" in modules and "segflow" in modules


def test_runtime_builtins_are_the_documented_python310_versions() -> None:
    """FC docs, "Python runtime: built-in modules", python3.10: oss2 2.16.0, Pillow 9.3.0, requests 2.28.1."""
    assert load_builder().runtime_builtins() == {"oss2": "2.16.0", "PIL": "9.3.0", "requests": "2.28.1"}


def test_layer_is_reproducible(layer: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    load_builder().main(["--out", str(again)])
    assert again.read_bytes() == layer.read_bytes()


@pytest.mark.parametrize("function", ["on_upload", "collect_jobs"])
def test_each_handler_imports_from_the_layer_and_its_function_folder_alone(
    unzipped: Path, tmp_path: Path, function: str
) -> None:
    """As on FC: /opt/python and the code folder on the path, oss2 and requests from the runtime."""
    code = (
        "import sys, index;"
        "import segflow;"
        f"assert segflow.__file__.startswith({str(unzipped)!r}), segflow.__file__;"
        "assert callable(index.handler);"
        "leaks = sorted(m for m in sys.modules if m.startswith(('segflow_cli', 'segflow_engine')));"
        "assert not leaks, leaks"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": f"{unzipped}:{REPO_ROOT / 'functions' / function}"},
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
