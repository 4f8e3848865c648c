"""`make engine-fc`: the engine as a Function Compute custom-runtime package (scripts/build_engine_fc.py).

GIVEN the pinned cp310 wheels (fetched by `make test`) and the installed ISNet weights
WHEN  a package is built for some actions, unpacked as FC unpacks it and started with its `bootstrap` on
      Python 3.10 with nothing but the package
THEN  it holds exactly what those actions need, says what it serves (manifest and startup log), answers them,
      refuses the others with the service's code, is reproducible and stays under FC's 500 MB limit for a
      code package (fc-engine.md §3).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow.client import Endpoints, VisionClient
from segflow.errors import ApiError
from segflow.retry import RetryPolicy
from segflow.signing import Credentials
from segflow_engine import served
from tests.project.conftest import PACKAGE_ACTIONS
from tests.support.engine_package import build_package, load_builder, start_instance
from tests.support.engine_server import LoopbackFiles, make_png, serve_files

KEY = Credentials("SEGFLOWPACKAGETEST01", "package-test-secret-0123456789")
FC_LIMIT_BYTES = 500 * 1000 * 1000


@pytest.fixture(scope="module")
def builder() -> Any:
    return load_builder()


# -- what goes in (no build) ---------------------------------------------------------------------------


def test_every_pin_names_a_component_the_engine_knows(builder: Any) -> None:
    pins = builder.read_pins()
    components = {c for needs in served.ACTION_NEEDS.values() for c in needs} - {builder.WEIGHT_COMPONENT}
    assert {pin.component for pin in pins} == {builder.BASE, *components}
    assert len({pin.name for pin in pins}) == len(pins)


def test_a_cutout_package_takes_no_mediapipe_no_matting_no_pyav(builder: Any) -> None:
    needs = served.needs(served.GROUPS["cutout"])
    names = {pin.name for pin in builder.pins_for(needs, builder.read_pins())}
    assert {"numpy", "onnxruntime", "opencv-python-headless", "pillow", "requests"} <= names
    assert not names & {"mediapipe", "matplotlib", "pymatting", "numba", "scipy", "av"}


def test_the_package_holds_the_engine_and_only_the_layer_modules_it_imports(builder: Any) -> None:
    modules = builder.engine_modules()
    assert "segflow_engine/fc.py" in modules and "segflow_engine/served.py" in modules
    assert {"segflow/catalogue.py", "segflow/errors.py", "segflow/signing.py", "segflow/__init__.py"} <= set(
        modules
    )
    assert not [name for name in modules if name.startswith(("segflow_cli/", "segflow/services/"))]
    # On FC the engine keeps its state in OSS with the layer's adapter, and nothing of the pipeline.
    assert {"segflow/storage/oss.py", "segflow_engine/cloud.py", "segflow_engine/fcruntime.py"} <= set(
        modules
    )
    assert not {"segflow/records.py", "segflow/outputs.py", "segflow/client.py"} & set(modules)


def test_the_bootstrap_uses_fcs_python_and_the_package_only(builder: Any) -> None:
    text = builder.bootstrap_text(["SegmentCommonImage", "SegmentCommodity"])
    assert text.startswith("#!/bin/sh\n")
    assert "python=/var/fc/lang/python3.10/bin/python3" in text  # custom.debian10 (fc-engine.md §2)
    assert 'export PYTHONPATH="$here/python"' in text
    assert 'export SEGFLOW_ENGINE_ACTIONS="SegmentCommonImage,SegmentCommodity"' in text
    assert '-S -m segflow_engine.fc --port "${SEGFLOW_ENGINE_PORT:-9000}"' in text


# -- a built package -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package_zip(engine_fc_zip: Path) -> Path:
    return engine_fc_zip


@pytest.fixture(scope="module")
def code(engine_fc_code: Path) -> Path:
    return engine_fc_code


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(96, 64, channels=3)}) as running:
        yield running


@pytest.mark.slow
def test_the_zip_is_laid_out_as_fc_runs_it(package_zip: Path) -> None:
    with zipfile.ZipFile(package_zip) as archive:
        infos = {info.filename: info for info in archive.infolist()}
    assert (infos["bootstrap"].external_attr >> 16) & 0o777 == 0o755
    assert "models/isnet-medium.onnx" in infos and "manifest.json" in infos
    assert "python/oss2/__init__.py" in infos and "python/av/__init__.py" in infos
    assert "python/segflow_engine/__pycache__/fc.cpython-310.pyc" in infos  # compiled for 3.10
    assert not [name for name in infos if name.startswith("python/mediapipe/")]
    assert not [name for name in infos if name.startswith("python/bin/")]
    assert {info.date_time for info in infos.values()} == {(2020, 1, 1, 0, 0, 0)}
    assert list(infos) == sorted(infos)
    assert package_zip.stat().st_size < FC_LIMIT_BYTES


@pytest.mark.slow
def test_the_manifest_says_what_the_package_serves_and_holds(code: Path) -> None:
    manifest = json.loads((code / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["actions"]) == {*served.GROUPS["cutout"], "SegmentGreenScreenVideo"}
    assert manifest["components"] == ["isnet", "onnxruntime", "pyav"]
    assert manifest["runtime"] == "custom.debian10" and manifest["python"] == "3.10"
    assert "mediapipe" not in manifest["distributions"]
    (weights,) = manifest["models"].values()
    digest = hashlib.sha256((code / "models" / "isnet-medium.onnx").read_bytes()).hexdigest()
    assert weights["sha256"] == digest


@pytest.mark.slow
def test_the_same_inputs_build_the_same_zip(package_zip: Path, tmp_path: Path) -> None:
    again = build_package(tmp_path / "again.zip", PACKAGE_ACTIONS)
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(package_zip.read_bytes()).digest()


@pytest.mark.slow
@pytest.mark.engine
def test_the_package_serves_its_actions_on_python_310_with_nothing_else(
    code: Path, files: LoopbackFiles
) -> None:
    env = {"SEGFLOW_ENGINE_ACCESS_KEYS": f"{KEY.access_key_id}:{KEY.access_key_secret}"}
    # Bound to 0.0.0.0, the engine takes inputs from public addresses only: the test's file server is let
    # through by name, as `customRuntimeConfig.args` could name a host on FC.
    host = files.url("photo.png").split("/")[2]
    with start_instance(code, env, ["--allow-input-host", host]) as instance:
        endpoints = Endpoints(imageseg=instance.url, videoseg=instance.url, openplatform=instance.url)
        client = VisionClient(KEY, endpoints=endpoints, retry=RetryPolicy(max_attempts=1), timeout=120)
        result = client.segment("SegmentCommonImage", files.url("photo.png"))
        assert result.image_url and result.image_url.startswith(instance.url)
        with pytest.raises(ApiError) as refused:
            client.segment("SegmentBody", files.url("photo.png"))
        assert (refused.value.code, refused.value.http_status) == ("InvalidApi.NotPurchase", 403)
        log = instance.log()
    expected = ", ".join(served.in_order({*served.GROUPS["cutout"], "SegmentGreenScreenVideo"}))
    assert f"segflow engine on Function Compute: serves {expected}" in log
    assert "listening on http://127.0.0.1:" in log  # bound to 0.0.0.0 (the banner shows a usable address)
