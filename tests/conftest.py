"""Fixtures every test level shares. Area-specific helpers live in tests/support/<area>.py."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.fake_api import FakeApi
    from tests.support.services_harness import Harness, ResultServer

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"
# The three packages' source folders: the layer, the engine, the `segflow` command.
SOURCE_ROOTS = (REPO_ROOT / "shared", REPO_ROOT / "engine", REPO_ROOT / "cli")


def load_event(name: str) -> dict[str, Any]:
    """A sample event from events/ as the dict FC would hand the handler (as bytes) after json.loads."""
    data: dict[str, Any] = json.loads((EVENTS_DIR / name).read_text(encoding="utf-8"))
    return data


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under `make test-fc` the layer must come from the unzipped zip, never from the checkout."""
    layer = os.environ.get("SEGFLOW_TEST_LAYER_DIR")
    if layer:
        import segflow

        where = Path(segflow.__file__).resolve()
        if not where.is_relative_to(Path(layer).resolve()):
            raise pytest.UsageError(f"segflow was imported from {where}, not from the layer at {layer}")


# -- the services over loopback (functional tests of every package) ----------------------------------------
# `api` is the fake vision API (signatures verified), `results` the server of result files, and `h` / `make`
# a harness wiring local-directory buckets, both servers and the handlers' dependencies together
# (tests/support/services_harness.py). A test module may override any of them with its own fixture. Imports
# are inside the fixtures, so unit tests never load the harness.


@pytest.fixture
def api() -> Iterator[FakeApi]:
    from tests.support.fake_api import FakeApi

    with FakeApi() as fake:
        yield fake


@pytest.fixture
def results() -> Iterator[ResultServer]:
    from tests.support.services_harness import ResultServer

    server = ResultServer()
    yield server
    server.close()


@pytest.fixture
def make(tmp_path: Path, api: FakeApi, results: ResultServer) -> Iterator[Any]:
    """Build a harness with overrides (`make(oversize="reject")`); the handlers' deps are reset after."""
    from segflow.services.deps import use_handler_deps
    from tests.support.services_harness import harness

    def build(**overrides: Any) -> Harness:
        return harness(tmp_path / "buckets", api, results, **overrides)

    yield build
    use_handler_deps(None)


@pytest.fixture
def h(make: Any) -> Harness:
    """The default harness."""
    built: Harness = make()
    return built
