"""The README and docs/ say what the code does (issue 18, "README").

- the README's first two commands are `make demo` and `make test`;
- every `.venv/bin/segflow …` command they print names a real subcommand and options (`--help`'s parser
  takes it), and every `make …` a real target;
- every variable the product reads (`SEGFLOW_*`, `ALIBABA_CLOUD_*`) is documented;
- every relative link leads to a file, and every `#anchor` to a heading of it.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PAGES = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
PRODUCT = ("shared/segflow", "engine/segflow_engine", "cli/segflow_cli", "functions")


def page_id(page: Path) -> str:
    return page.relative_to(REPO_ROOT).as_posix()


def commands(page: Path, program: str) -> Iterator[str]:
    """Each command line that runs `program`: in shell blocks (continued lines joined), and in inline code."""
    text = page.read_text(encoding="utf-8")
    for block in re.findall(r"```(?:sh)?\n(.*?)```", text, flags=re.DOTALL):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" # ")[0].strip().removeprefix("$ ")
            words = line.split()
            if program in words[:2] if program == "make" else line.startswith(program + " "):
                yield line
    for code in re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.DOTALL)):
        if code.startswith(program + " "):
            yield code


def test_the_readme_starts_with_make_demo_then_make_test() -> None:
    first = re.search(r"```sh\n(.*?)```", (REPO_ROOT / "README.md").read_text(encoding="utf-8"), re.DOTALL)
    assert first is not None
    lines = [line.split("#")[0].strip() for line in first.group(1).splitlines()]
    assert lines[:2] == ["make demo", "make test"]


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_segflow_command_printed_parses(page: Path) -> None:
    from segflow_cli.main import build_parser

    parser = build_parser()
    found = [line for line in commands(page, ".venv/bin/segflow") if line != ".venv/bin/segflow …"]
    for line in found:
        words = shlex.split(line.replace("…", "x"))[1:]
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"{page_id(page)}: `{line}` is not a segflow command line")
    text = page.read_text(encoding="utf-8")
    shell = "".join(re.findall(r"```sh\n(.*?)```", text, flags=re.DOTALL))
    bare = re.findall(r"^(?:\$ )?segflow \S+", shell, flags=re.MULTILINE)
    bare += re.findall(r"^\$ segflow \S+", text, flags=re.MULTILINE)
    assert not bare, f"printed without .venv/bin/ (not on the PATH after the quick start): {bare}"


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_make_target_printed_exists(page: Path) -> None:
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z0-9-]+):", makefile, flags=re.MULTILINE))
    for line in commands(page, "make"):
        target = line.split()[1]
        assert target in targets, f"{page_id(page)}: make {target} is not a Makefile target"


def test_every_variable_the_product_reads_is_documented() -> None:
    named: set[str] = set()
    for folder in PRODUCT:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            named |= set(
                re.findall(r"\b(?:SEGFLOW|ALIBABA_CLOUD)_[A-Z0-9_]*[A-Z0-9]\b", path.read_text("utf-8"))
            )
    named |= set(re.findall(r"\bSEGFLOW_[A-Z0-9_]*[A-Z0-9]\b", (REPO_ROOT / "s.yaml").read_text("utf-8")))
    documented = "".join(
        (REPO_ROOT / "docs" / page).read_text("utf-8") for page in ("configuration.md", "deploy.md")
    )
    shorthand = {f"ALIBABA_CLOUD_ACCESS_KEY{s}" for s in ("_SECRET",)} | {"ALIBABA_CLOUD_SECURITY_TOKEN"}
    missing = sorted(name for name in named if f"`{name}`" not in documented and name not in shorthand)
    assert not missing, f"read by the product, documented nowhere in docs/: {missing}"
    assert "`_SECRET`, `_SECURITY_TOKEN`" in documented  # the shorthand row of the table


def anchors(page: Path) -> set[str]:
    """GitHub's anchors: headings lower-cased, punctuation but `-` and `_` dropped, spaces to `-`."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_every_relative_link_leads_somewhere(page: Path) -> None:
    text = re.sub(r"<!--.*?-->", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        file, _, anchor = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        assert linked.exists(), f"{page_id(page)}: {target} does not exist"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{page_id(page)}: no heading #{anchor} in {file or 'itself'}"
