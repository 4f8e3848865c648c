"""Cold start: how long a fresh interpreter takes to import each function's handler module.

Baselines, measured in the same run and interleaved with the candidates (round-robin, one fresh
interpreter per import and repetition, medians):
- `import requests` — issue 2's floor for `import segflow.client`;
- `import oss2, requests` — the floor any OSS-triggered Python function with these packages pays;
- the official Tea SDK clients (`alibabacloud_imageseg20191230.client`,
  `alibabacloud_videoseg20200320.client`), what a handler written with Alibaba's
  SDK would import instead of `segflow.client`.

Targets: handler import ≤ 1.15 × `import oss2, requests` (issue 6); `import segflow.client` ≤ 1.15 ×
`import requests` (issue 2). When one is missed, `python -X importtime` names the modules that cost.

Run: `python bench/cold_start.py [--quick] [--json]`.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

if __package__ in (None, ""):
    sys.path.insert(0, __import__("os").path.dirname(__file__))
from _common import REPO_ROOT, Row, child_env, emit, log, median, parse_args, ratio_row

HANDLER_LIMIT = 1.15
CLIENT_LIMIT = 1.15


def _load_by_path(function: str) -> str:
    path = REPO_ROOT / "functions" / function / "index.py"
    return (
        f"_s = importlib.util.spec_from_file_location('index', {str(path)!r}); "
        "_m = importlib.util.module_from_spec(_s); _s.loader.exec_module(_m)"
    )


@dataclass(frozen=True)
class Subject:
    name: str
    statement: str
    prelude: str = ""  # imported before the clock starts (e.g. the floor, for an importtime diff)


SUBJECTS: tuple[Subject, ...] = (
    Subject("requests", "import requests"),
    Subject("oss2+requests", "import oss2, requests"),
    Subject("segflow.client", "import segflow, segflow.client"),
    Subject("on_upload handler", _load_by_path("on_upload")),
    Subject("collect_jobs handler", _load_by_path("collect_jobs")),
    Subject("tea imageseg client", "import alibabacloud_imageseg20191230.client"),
    Subject("tea videoseg client", "import alibabacloud_videoseg20200320.client"),
)


def _timing_program(subject: Subject) -> str:
    return (
        "import importlib.util, time\n"
        f"{subject.prelude}\n"
        "_t0 = time.perf_counter()\n"
        f"{subject.statement}\n"
        "print(repr((time.perf_counter() - _t0) * 1000.0))\n"
    )


def time_import(subject: Subject) -> float:
    """Milliseconds one fresh interpreter spends on the statement."""
    done = subprocess.run(
        [sys.executable, "-c", _timing_program(subject)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(REPO_ROOT),
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{subject.name}: {done.stderr.strip().splitlines()[-1:]}")
    return float(done.stdout.strip().splitlines()[-1])


def measure(subjects: Sequence[Subject], repetitions: int) -> dict[str, float]:
    """Median milliseconds per subject; subjects interleaved so drift hits all of them alike."""
    samples: dict[str, list[float]] = {s.name: [] for s in subjects}
    for rep in range(repetitions):
        for subject in subjects:
            samples[subject.name].append(time_import(subject))
        log(f"cold_start: round {rep + 1}/{repetitions}")
    return {name: median(values) for name, values in samples.items()}


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
    program = f"import importlib.util\n{floor}\n{subject.statement}\n"
    for _ in range(repetitions):
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", program],
            capture_output=True,
            text=True,
            env=child_env(),
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
    ms = measure(SUBJECTS, repetitions)
    floor, requests_ms = ms["oss2+requests"], ms["requests"]
    rows: list[Row] = []
    for name in ("on_upload handler", "collect_jobs handler"):
        detail = ""
        if ms[name] > HANDLER_LIMIT * floor:
            subject = next(s for s in SUBJECTS if s.name == name)
            extra, lines = import_costs(subject, "import oss2, requests")
            detail = f"{extra:.1f} ms on top of oss2+requests under -X importtime; " + "; ".join(lines)
        rows.append(
            ratio_row(
                f"cold start: {name} / import oss2, requests", ms[name], floor, HANDLER_LIMIT, detail=detail
            )
        )
    detail = ""
    if ms["segflow.client"] > CLIENT_LIMIT * requests_ms:
        subject = next(s for s in SUBJECTS if s.name == "segflow.client")
        extra, lines = import_costs(subject, "import requests")
        detail = f"{extra:.1f} ms on top of requests under -X importtime; " + "; ".join(lines)
    rows.append(
        ratio_row(
            "cold start: import segflow.client / import requests",
            ms["segflow.client"],
            requests_ms,
            CLIENT_LIMIT,
            detail=detail,
        )
    )
    handler = ms["on_upload handler"]
    for tea in ("tea imageseg client", "tea videoseg client"):
        rows.append(
            Row(
                f"cold start: on_upload handler / {tea}",
                f"{handler / ms[tea]:.2f}× ({handler:.1f} vs {ms[tea]:.1f} ms)",
                "(comparison)",
                None,
            )
        )
    medians = ", ".join(f"{k} {v:.0f} ms" for k, v in ms.items())
    rows[-1] = dataclasses.replace(
        rows[-1], detail=f"medians over {repetitions} fresh interpreters each: {medians}"
    )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(__doc__.splitlines()[0], argv)
    emit(run(args.quick), as_json=args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
