"""The engine over loopback with its models stubbed (protocol only), one per test module: the modules that
need another engine (AppCodes, one worker, per-test state) define their own `engine` or `stub`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.engine_server import RunningEngine, StubActions, start_engine


@pytest.fixture(scope="module")
def stub() -> StubActions:
    return StubActions()


@pytest.fixture(scope="module")
def engine(stub: StubActions) -> Iterator[RunningEngine]:
    with start_engine(actions=stub) as running:
        yield running
