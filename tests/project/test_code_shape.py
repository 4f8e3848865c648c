"""The shape rules of shared/ARCHITECTURE.md and ../STYLE.md, checked on the product code (issue 16):
no module over 500 lines, no function over 60, no `assert` standing in for a type (mypy --strict
proves what an assert would only hope), and module and class docstrings of a summary and a few lines."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import REPO_ROOT, SOURCE_ROOTS

PRODUCT_ROOTS = (*SOURCE_ROOTS, REPO_ROOT / "functions")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
# A summary line and a few lines a reader needs; a rationale lives once, where it constrains (issue 16 §4).
MAX_DOCSTRING_LINES = 8
DOCSTRING_ROOTS = tuple(
    REPO_ROOT / folder for folder in ("shared", "engine", "cli", "functions", "scripts", "bench")
)


def product_modules() -> Iterator[tuple[str, ast.Module, int]]:
    for root in PRODUCT_ROOTS:
        for path in sorted(root.rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            yield path.relative_to(REPO_ROOT).as_posix(), ast.parse(text), len(text.splitlines())


def test_no_module_is_over_500_lines() -> None:
    long = {name: lines for name, _, lines in product_modules() if lines > MAX_MODULE_LINES}
    assert not long


def test_no_function_is_over_60_lines() -> None:
    long = [
        f"{name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for name, tree, _ in product_modules()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long


def test_no_assert_stands_in_for_a_type_in_product_code() -> None:
    with_asserts = {
        name for name, tree, _ in product_modules() if any(isinstance(n, ast.Assert) for n in ast.walk(tree))
    }
    assert not with_asserts, "product code checks types with mypy, not assert"


def test_module_and_class_docstrings_are_a_summary_and_a_few_lines() -> None:
    long = []
    for root in DOCSTRING_ROOTS:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in (tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef))):
                lines = len((ast.get_docstring(node) or "").splitlines())
                if lines > MAX_DOCSTRING_LINES:
                    where = "module" if isinstance(node, ast.Module) else f"class {node.name}"
                    long.append(f"{path.relative_to(REPO_ROOT)} {where}: {lines} lines")
    assert not long


def test_the_product_roots_exist() -> None:
    assert all(Path(root).is_dir() for root in (*PRODUCT_ROOTS, *DOCSTRING_ROOTS))
