"""Fixtures every test level shares. Area-specific helpers live in tests/support/<area>.py."""

from __future__ import annotations

import json
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
