"""Fixtures every test level shares. Area-specific helpers live in tests/support/<area>.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"


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
