"""Fixtures of the functional tests that drive the services over loopback.

`api` is the fake vision API (signatures verified), `results` the server of result files, and `h` /
`make` a harness wiring local-directory buckets, both servers and the handlers' dependencies together
(tests/support/services_harness.py). A test module may override any of them with its own fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow.services.deps import use_handler_deps
from tests.support.fake_api import FakeApi
from tests.support.services_harness import Harness, ResultServer, harness


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi() as fake:
        yield fake


@pytest.fixture
def results() -> Iterator[ResultServer]:
    server = ResultServer()
    yield server
    server.close()


@pytest.fixture
def make(tmp_path: Path, api: FakeApi, results: ResultServer) -> Iterator[Any]:
    """Build a harness with overrides (`make(oversize="reject")`); the handlers' deps are reset after."""

    def build(**overrides: Any) -> Harness:
        return harness(tmp_path / "buckets", api, results, **overrides)

    yield build
    use_handler_deps(None)


@pytest.fixture
def h(make: Any) -> Harness:
    """The default harness."""
    built: Harness = make()
    return built
