"""Cold start as FC pays it: a fresh interpreter importing oss2, requests and a function's handler.

On Python 3.10 with only the runtime's built-ins (`.venv-fc310`), the layer zip built in this run unzipped
read-only as /opt/python, against baselines measured in the same run and interleaved; what is compared and
the targets: bench/README.md ("cold_start.py").

Run: `python bench/cold_start.py [--quick] [--json]`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import REPO_ROOT, Row, child_env, emit, log, median, parse_args, ratio_row

HANDLER_LIMIT = 1.05
CLIENT_LIMIT = 1.15
FUNCTIONS = ("on_upload", "collect_jobs")
OLD_VENDORED = ("requests", "urllib3", "idna", "certifi", "charset_normalizer")
OLD_LOCAL_TOOLS = ("main", "run", "invoke", "fccontext", "preview", "localbucket")
"""The command modules the old layer shipped (cli.py is main.py since the layout of issue 16 §3)."""


@dataclass(frozen=True)
class Subject:
    name: str
    statement: str
    prelude: str = ""  # imported before the clock starts (e.g. the floor, for an importtime diff)
    path: tuple[str, ...] = field(default=())  # PYTHONPATH of the child; empty: the checkout's
    interpreter: str = sys.executable
    then: str = ""  # run after `statement` in the same interpreter and timed on its own as well


def _load_handler(code_dir: Path, function: str) -> str:
    path = code_dir / function / "index.py"
    return (
        f"_s = importlib.util.spec_from_file_location('index', {str(path)!r}); "
        "_m = importlib.util.module_from_spec(_s); _s.loader.exec_module(_m)"
    )


FC_PYTHON = REPO_ROOT / ".venv-fc310" / "bin" / "python"


def fc_python() -> str:
    """The FC-like Python 3.10 (made by scripts/fc-python310-env.sh), else this interpreter."""
    if not FC_PYTHON.exists():
        done = subprocess.run(
            ["bash", str(REPO_ROOT / "scripts" / "fc-python310-env.sh")], capture_output=True, text=True
        )
        if done.returncode != 0:
            log("cold_start: no Python 3.10 environment; measuring on this interpreter instead")
            return sys.executable
    return str(FC_PYTHON)


def subjects_for(fc_root: Path, python: str) -> tuple[Subject, ...]:
    """The subjects, FC-style ones on `python` with the layer unzipped under `fc_root`."""
    layer, code = fc_root / "opt" / "python", fc_root / "code"
    as_fc = (str(layer),)
    handlers = tuple(
        Subject(
            f"{function} handler",
            "import oss2, requests",
            then=_load_handler(code, function),
            path=as_fc,
            interpreter=python,
        )
        for function in FUNCTIONS
    )
    return (
        Subject("requests", "import requests", path=as_fc, interpreter=python),
        Subject("oss2+requests", "import oss2, requests", path=as_fc, interpreter=python),
        # The client from the layer, as a function imports it: from the checkout, its bytecode would be
        # whatever the last import left (none under PYTHONDONTWRITEBYTECODE: a compile every time).
        Subject(
            "segflow.client",
            "import requests",
            then="import segflow, segflow.client",
            path=as_fc,
            interpreter=python,
        ),
        *handlers,
        Subject("tea imageseg client", "import alibabacloud_imageseg20191230.client"),
        Subject("tea videoseg client", "import alibabacloud_videoseg20200320.client"),
    )


def _builder() -> object:
    spec = importlib.util.spec_from_file_location("build_layer", REPO_ROOT / "scripts" / "build_layer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def deploy_like_fc(fc_root: Path, python: str) -> Path:
    """Build the layer zip, unzip it read-only as /opt and copy the function folders as the code."""
    zip_path = fc_root / "segflow-layer.zip"
    python310 = python if python != sys.executable else None
    _builder().build(zip_path, python310=python310)  # type: ignore[attr-defined]
    zipfile.ZipFile(zip_path).extractall(fc_root / "opt")
    shutil.copytree(REPO_ROOT / "functions", fc_root / "code", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (fc_root / "opt", fc_root / "code"):
        subprocess.run(["chmod", "-R", "a-w", str(path)], check=True)
    return zip_path


def _env_for(subject: Subject) -> dict[str, str]:
    env = child_env()
    if subject.path:
        env["PYTHONPATH"] = ":".join(subject.path)  # the layer alone, as on FC (oss2, requests: site)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # every FC instance unpacks the layer afresh
    return env


def _timing_program(subject: Subject) -> str:
    return (
        "import importlib.util, time\n"
        f"{subject.prelude}\n"
        "_t0 = time.perf_counter()\n"
        f"{subject.statement}\n"
        "_t1 = time.perf_counter()\n"
        f"{subject.then}\n"
        "_t2 = time.perf_counter()\n"
        "print(repr((_t2 - _t0) * 1000.0), repr((_t2 - _t1) * 1000.0))\n"
    )


def time_import(subject: Subject) -> tuple[float, float]:
    """Milliseconds one fresh interpreter spends on the statement and `then`, and on `then` alone."""
    done = subprocess.run(
        [subject.interpreter, "-c", _timing_program(subject)],
        capture_output=True,
        text=True,
        env=_env_for(subject),
        cwd=str(REPO_ROOT),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{subject.name}: {done.stderr.strip().splitlines()[-1:]}")
    whole, then = done.stdout.strip().splitlines()[-1].split()
    return float(whole), float(then)


def measure(subjects: Sequence[Subject], repetitions: int) -> tuple[dict[str, float], dict[str, float]]:
    """Median milliseconds per subject, whole and of its `then` alone; subjects interleaved so drift hits
    all of them alike."""
    samples: dict[str, list[tuple[float, float]]] = {s.name: [] for s in subjects}
    for rep in range(repetitions):
        for subject in subjects:
            samples[subject.name].append(time_import(subject))
        log(f"cold_start: round {rep + 1}/{repetitions}")
    whole = {name: median([w for w, _ in values]) for name, values in samples.items()}
    then = {name: median([t for _, t in values]) for name, values in samples.items()}
    return whole, then


# ------------------------------------------------------------------------------------ importtime


_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


@dataclass
class _Node:
    name: str
    self_us: int
    cumulative_us: int
    depth: int
    children: list[_Node]


def _import_tree(stderr: str) -> list[_Node]:
    """Roots of the `-X importtime` tree (it prints children before their parent, deeper indented)."""
    stack: list[_Node] = []
    for line in stderr.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        self_us, cum_us, indent, name = int(match[1]), int(match[2]), len(match[3]), match[4]
        depth = indent // 2
        node = _Node(name, self_us, cum_us, depth, [])
        while stack and stack[-1].depth > depth:
            node.children.insert(0, stack.pop())
        stack.append(node)
    return stack


def _first_party(name: str) -> bool:
    return name.split(".")[0] in ("segflow", "index")


def _attribute(nodes: Sequence[_Node], out: dict[str, float]) -> None:
    """Milliseconds each first-party module costs: its own time plus the third-party/stdlib modules it
    was the first to import."""
    for node in nodes:
        if _first_party(node.name):
            brought = sum(c.cumulative_us for c in node.children if not _first_party(c.name))
            out[node.name] = out.get(node.name, 0.0) + (node.self_us + brought) / 1000.0
            _attribute([c for c in node.children if _first_party(c.name)], out)


def _heavy_children(nodes: Sequence[_Node], out: dict[str, float]) -> None:
    """Third-party/stdlib modules first imported by first-party code, with their cumulative cost."""
    for node in nodes:
        if _first_party(node.name):
            for child in node.children:
                if _first_party(child.name):
                    continue
                out[child.name] = out.get(child.name, 0.0) + child.cumulative_us / 1000.0
            _heavy_children(node.children, out)


def import_costs(subject: Subject, floor: str, repetitions: int = 3) -> tuple[float, list[str]]:
    """What `subject` imports on top of `floor` (already imported): the extra milliseconds under
    importtime and the most expensive first-party modules / modules they pull in."""
    per_module: dict[str, list[float]] = {}
    foreign: dict[str, list[float]] = {}
    totals: list[float] = []
    program = f"import importlib.util\n{floor}\n{subject.statement}\n{subject.then}\n"
    for _ in range(repetitions):
        done = subprocess.run(
            [subject.interpreter, "-X", "importtime", "-c", program],
            capture_output=True,
            text=True,
            env=_env_for(subject),
            cwd=str(REPO_ROOT),
            check=False,
        )
        roots = _import_tree(done.stderr)
        floor_names = {name.strip() for name in floor.replace("import", "").split(",")}
        after = roots[[i for i, r in enumerate(roots) if r.name in floor_names][-1] + 1 :] if roots else []
        totals.append(sum(r.cumulative_us for r in after) / 1000.0)
        mods: dict[str, float] = {}
        _attribute(after, mods)
        for name, ms in mods.items():
            per_module.setdefault(name, []).append(ms)
        heavy: dict[str, float] = {}
        _heavy_children(after, heavy)
        for name, ms in heavy.items():
            foreign.setdefault(name, []).append(ms)
    top_own = sorted(((median(v), k) for k, v in per_module.items()), reverse=True)[:6]
    top_foreign = sorted(((median(v), k) for k, v in foreign.items()), reverse=True)[:6]
    lines = [
        "first-party modules (own time + what they first import): "
        + ", ".join(f"{k} {ms:.1f} ms" for ms, k in top_own),
        "heaviest modules they pull in: " + ", ".join(f"{k} {ms:.1f} ms" for ms, k in top_foreign),
    ]
    return median(totals), lines


# ------------------------------------------------------------------------------------ main


def run(quick: bool) -> list[Row]:
    repetitions = 5 if quick else 15
    python = fc_python()
    with tempfile.TemporaryDirectory(prefix="segflow-fc-") as tmp:
        fc_root = Path(tmp)
        try:
            zip_path = deploy_like_fc(fc_root, python)
            subjects = subjects_for(fc_root, python)
            ms, then = measure(subjects, repetitions)
            rows = _handler_rows(subjects, ms, then)
            rows.append(_client_row(subjects, ms, then))
            rows += _tea_rows(ms, then)
            rows.append(_layer_row(zip_path))
        finally:
            subprocess.run(["chmod", "-R", "u+w", tmp], check=False)
    medians = ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items())
    rows[-2] = dataclasses.replace(
        rows[-2], detail=f"medians over {repetitions} fresh interpreters each: {medians}"
    )
    return rows


def _handler_rows(subjects: Sequence[Subject], ms: dict[str, float], then: dict[str, float]) -> list[Row]:
    """oss2, requests + a handler against oss2, requests: the floor's median plus the median of the handler's
    own import, timed after the floor in the same interpreter (a whole interpreter's time varies by a few
    per cent from one to the next, as much as the handler costs; the difference of two such medians would
    mostly measure that)."""
    floor = ms["oss2+requests"]
    rows: list[Row] = []
    for function in FUNCTIONS:
        name = f"{function} handler"
        detail = f"the handler's own import: {then[name]:.2f} ms (median)"
        if floor + then[name] > HANDLER_LIMIT * floor:
            subject = next(s for s in subjects if s.name == name)
            extra, lines = import_costs(subject, "import oss2, requests")
            detail = f"{extra:.1f} ms on top of oss2+requests under -X importtime; " + "; ".join(lines)
        rows.append(
            ratio_row(
                f"cold start as FC pays it: oss2, requests + {name} / oss2, requests",
                floor + then[name],
                floor,
                HANDLER_LIMIT,
                detail=detail,
            )
        )
    return rows


def _client_row(subjects: Sequence[Subject], ms: dict[str, float], then: dict[str, float]) -> Row:
    """As `_handler_rows`: `import requests`, then segflow.client timed on its own in the same interpreter."""
    requests_ms = ms["requests"]
    client_ms = then["segflow.client"]
    detail = f"segflow.client's own import: {client_ms:.2f} ms (median)"
    if requests_ms + client_ms > CLIENT_LIMIT * requests_ms:
        subject = next(s for s in subjects if s.name == "segflow.client")
        extra, lines = import_costs(subject, "import requests")
        detail = f"{extra:.1f} ms on top of requests under -X importtime; " + "; ".join(lines)
    return ratio_row(
        "cold start: import segflow.client / import requests",
        requests_ms + client_ms,
        requests_ms,
        CLIENT_LIMIT,
        detail=detail,
    )


def _tea_rows(ms: dict[str, float], then: dict[str, float]) -> list[Row]:
    handler = then["on_upload handler"]
    return [
        Row(
            f"cold start: on_upload handler's own import / {tea}",
            f"{handler / ms[tea]:.2f}× ({handler:.1f} vs {ms[tea]:.1f} ms)",
            "(comparison)",
            None,
        )
        for tea in ("tea imageseg client", "tea videoseg client")
    ]


def _layer_row(zip_path: Path) -> Row:
    """The layer zip against the same code packaged the old way (whole package, local tools, vendored
    requests and its dependencies), both measured now."""
    files, size = _zip_stats(zip_path)
    old_files, old_size = _old_packaging_stats()
    return Row(
        "layer zip: files, size",
        f"{files} files, {size / 1024:.0f} KiB",
        f"< old packaging ({old_files} files, {old_size / 1024:.0f} KiB)",
        size < old_size and files < old_files,
        "the layer holds only the handlers' import closure; FC's python3.10 built-ins (oss2 2.16.0, "
        "Pillow 9.3.0, requests 2.28.1) are not shipped again",
    )


def _zip_stats(zip_path: Path) -> tuple[int, int]:
    return len(zipfile.ZipFile(zip_path).namelist()), zip_path.stat().st_size


def _old_packaging_stats() -> tuple[int, int]:
    sources = [
        p
        for p in (REPO_ROOT / "shared" / "segflow").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    tools = REPO_ROOT / "cli" / "segflow_cli"
    sources += [tools / f"{name}.py" for name in OLD_LOCAL_TOOLS]
    for package in OLD_VENDORED:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            sources += [p for p in root.rglob("*") if p.is_file() and p.suffix not in (".pyc", ".so")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "old.zip"
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for index, path in enumerate(sources):
                archive.writestr(f"python/{index}/{path.name}", path.read_bytes())
        return _zip_stats(out)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    emit(run(args.quick), as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
