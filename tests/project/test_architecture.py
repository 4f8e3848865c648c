"""The import rules of shared/ARCHITECTURE.md, checked against the code (every import, functions included).

- the handlers import only `segflow.deadline` and `segflow.services.*`;
- the layer (`segflow`) never imports `segflow_cli` or `segflow_engine`, and its levels only look down:
  foundation < knowledge < adapters < bookkeeping < services;
- the engine imports only the API's facts from the layer, never the command;
- the engine's segmenters depend on each other one way (no cycle), face detection on no other segmenter,
  and the registry's name → module map matches the `@register` classes;
- no module of the product serves HTTP by hand: no HTTP server or request-handler class, no `selectors`,
  `socketserver` or `http.server` (the one server is waitress, `segflow_engine.wsgiserver`), and the tests'
  helpers never reach into the engine's HTTP side.
"""

from __future__ import annotations

import ast
import graphlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

LEVELS = {
    1: {"errors", "deadline", "states", "values", "signing", "settings", "logs"},
    2: {"catalogue", "media", "validation", "routing", "events", "results", "imagefit"},
    3: {"storage", "client", "transport", "ratelimit", "retry", "credentials", "tempupload"},
    4: {"layout", "records", "jobqueue", "failure_records", "failure_policy", "outputs"},
    5: {"services"},
}
LEVEL_OF = {name: level for level, names in LEVELS.items() for name in names}
ENGINE_MAY_USE = {"segflow", "segflow.catalogue", "segflow.errors", "segflow.media", "segflow.signing"}
ENGINE_MAY_USE |= {"segflow.validation"}
# The engine on Function Compute keeps its state in OSS with the layer's storage adapter, reached with the
# role key the layer reads from the environment (shared/ARCHITECTURE.md, "Who may import whom").
ENGINE_MAY_USE |= {"segflow.storage", "segflow.settings", "segflow.credentials"}


PACKAGES = (("shared", "segflow"), ("engine", "segflow_engine"), ("cli", "segflow_cli"))


def modules(root: Path, package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((root / package).rglob("*.py")):
        dotted = ".".join(path.relative_to(root).with_suffix("").parts)
        yield dotted.removesuffix(".__init__"), path


def imports(path: Path) -> set[str]:
    """Every module name `path` imports, anywhere in it (imports inside functions included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def layer_part(name: str) -> str | None:
    """`segflow.services.upload` → `services`; None for other packages."""
    parts = name.split(".")
    return parts[1] if parts[0] == "segflow" and len(parts) > 1 else None


def test_every_layer_module_has_a_level() -> None:
    parts = {layer_part(name) for name, _ in modules(REPO_ROOT / "shared", "segflow")} - {None}
    assert parts <= set(LEVEL_OF), f"add {sorted(parts - set(LEVEL_OF))} to ARCHITECTURE.md and LEVELS"


@pytest.mark.parametrize("function", ["on_upload", "collect_jobs"])
def test_handlers_import_only_the_deadline_and_the_services(function: str) -> None:
    used = {
        name
        for name in imports(REPO_ROOT / "functions" / function / "index.py")
        if name.startswith("segflow")
    }
    assert used and all(n.startswith(("segflow.deadline", "segflow.services.")) for n in used), used


# What each handler's import leaves for the invocations that need it (shared/ARCHITECTURE.md, "Cold start").
NOT_AT_IMPORT = {
    "on_upload": {
        "segflow.client",
        "segflow.signing",
        "segflow.storage.oss",
        "oss2",
        "segflow.tempupload",
        "segflow.services.pairs",
        "segflow.services.leftovers",
        "segflow.imagefit",
        "segflow.media.isobmff",
        "segflow.media.images",
        "concurrent.futures",
        "xml.etree.ElementTree",
    },
    "collect_jobs": {
        "segflow.client",
        "segflow.signing",
        "segflow.storage.oss",
        "oss2",
        "segflow.services.collect_job",
        "segflow.services.leftovers",
        "segflow.services.paid",
        "segflow.media",
        "concurrent.futures",
    },
}


@pytest.mark.parametrize("function", sorted(NOT_AT_IMPORT))
def test_a_handlers_import_leaves_what_not_every_invocation_needs(function: str) -> None:
    program = (  # on top of FC's floor, oss2 and requests, as bench/cold_start.py measures it
        "import sys, re, oss2, requests\n"
        "compiled, before = len(re._cache), set(sys.modules)\n"
        "import index\n"
        "print(len(re._cache) - compiled, *sorted(set(sys.modules) - before))"
    )
    path = os.pathsep.join([str(REPO_ROOT / "functions" / function), str(REPO_ROOT / "shared")])
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=60
    )
    patterns, *loaded = done.stdout.split()
    assert done.returncode == 0, done.stderr
    assert {name for name in loaded if name.startswith("segflow")}, "the handler imported nothing"
    assert not NOT_AT_IMPORT[function] & set(loaded)
    assert patterns == "0", "a regular expression was compiled at import"


def test_the_layer_never_imports_the_command_or_the_engine() -> None:
    leaks = {
        (name, target)
        for name, path in modules(REPO_ROOT / "shared", "segflow")
        for target in imports(path)
        if target.split(".")[0] in ("segflow_cli", "segflow_engine")
    }
    assert not leaks


def test_the_layers_levels_only_look_down() -> None:
    upward = []
    for name, path in modules(REPO_ROOT / "shared", "segflow"):
        own = layer_part(name)
        if own is None:
            continue
        for target in imports(path):
            other = layer_part(target)
            if other in LEVEL_OF and other != own and LEVEL_OF[other] > LEVEL_OF[own]:
                upward.append(f"{name} → {target}")
    assert not upward, upward


def test_the_engine_uses_only_the_apis_facts_from_the_layer_and_never_the_command() -> None:
    wrong = []
    for name, path in modules(REPO_ROOT / "engine", "segflow_engine"):
        for target in imports(path):
            package = target.split(".")[0]
            layer_module = ".".join(target.split(".")[:2])
            if package == "segflow_cli" or (package == "segflow" and layer_module not in ENGINE_MAY_USE):
                wrong.append(f"{name} → {target}")
    assert not wrong, wrong


COSTLY_TYPE_BUILDERS = {"NamedTuple", "namedtuple", "dataclass", "Enum", "IntEnum", "StrEnum", "Flag"}


def _builder_name(node: ast.expr) -> str | None:
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Name):
        return target.id
    return target.attr if isinstance(target, ast.Attribute) else None


def test_layer_value_types_compile_nothing_when_defined() -> None:
    """Cold start (shared/ARCHITECTURE.md, "Cold start"): every new FC instance defines the layer's types
    again, and a `NamedTuple`, an `Enum` or a `@dataclass` costs 0.1–0.8 ms each to define on python3.10.
    Value types derive from `segflow.values.Value`, enumerations are `Literal`s with `Final` constants."""
    offenders = []
    for name, path in modules(REPO_ROOT / "shared", "segflow"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            used = []
            if isinstance(node, ast.ClassDef):
                used = [_builder_name(e) for e in (*node.bases, *node.decorator_list)]
            elif isinstance(node, ast.Call):
                used = [_builder_name(node)]
            offenders += [f"{name}:{node.lineno} {u}" for u in used if u in COSTLY_TYPE_BUILDERS]
    assert not offenders


HAND_WRITTEN_HTTP_MODULES = ("selectors", "socketserver", "http.server")
SERVER_BASE = re.compile(
    r"(HTTPServer|TCPServer|UDPServer|WSGIServer|RequestHandler|HTTPChannel|dispatcher)$"
)
ENGINE_HTTP_SIDE = {"segflow_engine.handler", "segflow_engine.wsgiserver"}


def product_modules() -> Iterator[tuple[str, Path]]:
    for folder, package in PACKAGES:
        yield from modules(REPO_ROOT / folder, package)


def test_no_product_module_serves_http_by_hand() -> None:
    """Issue 16 §1: the engine and the local URL server are WSGI applications on waitress."""
    found = []
    for name, path in product_modules():
        used = imports(path)
        found += [f"{name} imports {m}" for m in HAND_WRITTEN_HTTP_MODULES if m in used or any(
            u.startswith(m + ".") for u in used)]  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                found += [f"{name}.{node.name}({base})" for base in bases if SERVER_BASE.search(base)]
    assert not found, found


def test_the_tests_helpers_do_not_reach_into_the_engines_http_side() -> None:
    support = REPO_ROOT / "tests" / "support"
    reaching = {
        f"{path.name} → {target}"
        for path in support.glob("*.py")
        for target in imports(path)
        if ".".join(target.split(".")[:2]) in ENGINE_HTTP_SIDE
    }
    assert not reaching


SEGMENTERS_DIR = REPO_ROOT / "engine" / "segflow_engine" / "segmenters"


def segmenter_graph() -> dict[str, set[str]]:
    """Module → the modules of `segflow_engine.segmenters` it imports (functions included), by short name.
    `base` loads a segmenter's module by name on first use (`importlib`); that lazy registry is no edge."""
    names = {path.stem for path in SEGMENTERS_DIR.glob("*.py")} - {"__init__"}
    graph = {}
    for name in names:
        parts = (target.split(".") for target in imports(SEGMENTERS_DIR / f"{name}.py"))
        used = {p[2] for p in parts if p[:2] == ["segflow_engine", "segmenters"] and len(p) > 2}
        graph[name] = (used & names) - {name}
    return graph


def registered_segmenters(path: Path) -> set[str]:
    """The literal `name = "…"` of every `@register` class in `path`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list
        ):
            found |= {
                str(stmt.value.value)
                for stmt in node.body
                if isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Constant)
                and any(isinstance(t, ast.Name) and t.id == "name" for t in stmt.targets)
            }
    return found


def test_segmenter_dependencies_run_one_way() -> None:
    graph = segmenter_graph()
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"segmenter modules import each other: {exc.args[1]}")
    assert set(order) == set(graph)
    # The direction shared/ARCHITECTURE.md describes: person and the face parts build on face detection.
    assert "facedetect" in graph["person"]
    assert {"facedetect", "person"} <= graph["faceparts"]


def test_face_detection_imports_no_other_segmenter() -> None:
    from segflow_engine.segmenters.base import _MODULES

    segmenter_modules = set(_MODULES.values())
    assert "facedetect" in segmenter_modules
    assert not segmenter_graph()["facedetect"] & segmenter_modules


def test_the_segmenter_registry_names_the_module_that_registers_each_segmenter() -> None:
    from segflow_engine.segmenters.base import _MODULES

    declared = {
        name: path.stem for path in SEGMENTERS_DIR.glob("*.py") for name in registered_segmenters(path)
    }
    assert declared == _MODULES


# -- no import cycle in any package ------------------------------------------------------------------------


def runtime_imports(path: Path) -> set[str]:
    """What `path` imports when it runs: every import, inside functions too, but not under TYPE_CHECKING."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
    return found


def import_graph() -> dict[str, set[str]]:
    """First-party module → the first-party modules it imports (a name imported from a package counts as
    the submodule when there is one, else as the package)."""
    paths = {
        name: path for folder, package in PACKAGES for name, path in modules(REPO_ROOT / folder, package)
    }
    return {name: (runtime_imports(path) & set(paths)) - {name} for name, path in paths.items()}


def import_cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back() -> None:
    cycles = [sorted(cycle) for cycle in import_cycles(import_graph())]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
