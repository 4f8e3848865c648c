"""The engine's Function Compute package, built once for every test that needs it (a build takes about 30 s
on this project's CI): the cut-out actions and one video action, the same package the proof of issue 17 §4
runs as two instances (tests/project/test_deploy_engine_on_fc.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engine_package import build_package, unpack

PACKAGE_ACTIONS = "cutout,SegmentGreenScreenVideo"  # ISNet, onnxruntime and PyAV; no MediaPipe


@pytest.fixture(scope="session")
def engine_fc_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_package(tmp_path_factory.mktemp("pkg") / "segflow-engine-fc.zip", PACKAGE_ACTIONS)


@pytest.fixture(scope="session")
def engine_fc_code(engine_fc_zip: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package unpacked as FC unpacks it at /code."""
    return unpack(engine_fc_zip, tmp_path_factory.mktemp("fc") / "code")
