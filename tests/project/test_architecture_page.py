"""shared/ARCHITECTURE.md names only what exists, and its import rules say what test_architecture.py checks.

- every backticked dotted name of a package's module (`layout.BucketLayout`, `segflow_engine.served`,
  `retry.RetryPolicy.run(…)`) resolves to a module or an attribute; a bare layer module name is read
  under `segflow`;
- the levels of the layer in "Who may import whom" are `LEVELS`, and the layer modules the engine may
  import are `ENGINE_MAY_USE`;
- every package pyproject.toml installs for the product has its line of why in "Third-party packages".
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator

import pytest

from tests.conftest import REPO_ROOT
from tests.project.test_architecture import ENGINE_MAY_USE, LEVELS

PAGE = REPO_ROOT / "shared" / "ARCHITECTURE.md"
PACKAGES = ("segflow", "segflow_engine", "segflow_cli")
LAYER_MODULES = {
    path.stem for path in (REPO_ROOT / "shared" / "segflow").iterdir() if not path.name.startswith("_")
} - {"py"}
DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text under `## title`, up to the next heading of that level."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", page(), flags=re.MULTILINE | re.DOTALL)
    assert found, f"ARCHITECTURE.md has no section {title!r}"
    return found.group(1)


def named_symbols(text: str) -> Iterator[str]:
    """Each backticked name of a first-party module or of something in one, fully qualified."""
    for code in re.findall(r"`([^`\n]+)`", text):
        name = code.split("(")[0]
        if not DOTTED.fullmatch(name):
            continue
        first = name.split(".")[0]
        if first in PACKAGES:
            yield name
        elif first in LAYER_MODULES:
            yield f"segflow.{name}"


def resolve(name: str) -> object:
    """The module or attribute `name` names; raises if there is none."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise ModuleNotFoundError(name)


def test_the_page_names_symbols_at_all() -> None:
    names = set(named_symbols(page()))
    assert {"segflow.layout.BucketLayout", "segflow_engine.served", "segflow.services.paid.PaidCall"} <= names


@pytest.mark.parametrize("name", sorted(set(named_symbols(page()))))
def test_every_name_the_page_gives_exists(name: str) -> None:
    try:
        resolve(name)
    except (ImportError, AttributeError) as missing:
        pytest.fail(f"ARCHITECTURE.md names `{name}`, which does not exist ({missing})")


def drawn_levels() -> dict[int, set[str]]:
    """The layer's levels as the diagram draws them: `  5 services  services.{upload, …}` and the like."""
    drawn = re.sub(r"\{[^}]*\}|\([^)]*\)", "", section("Who may import whom"))  # `services.{…}`, `(OSS)`
    return {
        int(number): {part.strip().split(".")[0] for part in names.split(",") if part.strip()}
        for number, names in re.findall(r"^  (\d) [a-z]+ +(.+)$", drawn, re.MULTILINE)
    }


def test_the_drawn_levels_are_the_checked_levels() -> None:
    assert drawn_levels() == LEVELS


def test_the_drawn_engine_rule_is_the_checked_one() -> None:
    drawn: set[str] = set()
    for line in section("Who may import whom").splitlines():
        if line.lstrip().startswith(("segflow_engine ──►", "──►")):
            for group in re.findall(r"segflow\.\{([^}]*)\}", line):
                drawn |= {f"segflow.{name.strip()}" for name in group.split(",")}
    assert drawn == ENGINE_MAY_USE - {"segflow"}


def product_requirements() -> set[str]:
    """The distributions pyproject.toml installs for the product: the layer's, the command's, the engine's."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"]["cli"]]
    lines += project["optional-dependencies"]["engine"]
    return {re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower() for line in lines}


def test_every_package_the_product_installs_has_its_reason_on_the_page() -> None:
    named = {code.lower() for code in re.findall(r"`([^`\n]+)`", section("Third-party packages"))}
    assert product_requirements() - named == set()
