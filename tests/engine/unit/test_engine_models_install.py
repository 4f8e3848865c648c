"""`segflow models install|check` without the network: a fake npm tarball in the real package's layout."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from segflow_engine import models, models_cli

CHUNK = 1024


def fake_npm_tarball(path: Path, payload: bytes, *, damage: bool = False) -> Path:
    """`npm pack` output of @imgly/background-removal-data: dist/<sha256> chunks + dist/resources.json."""
    chunks = [payload[i : i + CHUNK] for i in range(0, len(payload), CHUNK)]
    index = {
        "/models/small": {"chunks": [], "size": 0},
        models.ISNET_RESOURCE: {
            "size": len(payload),
            "mime": "application/octet-steam",
            "chunks": [
                {"hash": hashlib.sha256(chunk).hexdigest(), "offsets": [i * CHUNK, i * CHUNK + len(chunk)]}
                for i, chunk in enumerate(chunks)
            ],
        },
    }
    with tarfile.open(path, "w:gz") as archive:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))

        add("dist/resources.json", json.dumps(index).encode())
        for i, chunk in enumerate(chunks):
            stored = chunk[:-1] + b"X" if damage and i == 1 else chunk
            add(f"dist/{hashlib.sha256(chunk).hexdigest()}", stored)
    return path


@pytest.fixture
def pinned_payload(monkeypatch) -> bytes:
    payload = b"".join(hashlib.sha256(bytes([i])).digest() for i in range(104))  # 3328 bytes: 4 chunks
    monkeypatch.setattr(models, "ISNET_SIZE", len(payload))
    monkeypatch.setattr(models, "ISNET_SHA256", hashlib.sha256(payload).hexdigest())
    return payload


def test_install_joins_the_checked_chunks_then_is_a_no_op(tmp_path, pinned_payload):
    tarball = fake_npm_tarball(tmp_path / "data.tgz", pinned_payload)
    lines: list[str] = []
    first = models.install(tmp_path / "models", tarball=tarball, log=lines.append)
    assert first.action == "installed" and first.path.read_bytes() == pinned_payload
    again = models.install(tmp_path / "models", tarball=tarball, log=lines.append)
    assert again.action == "present"
    assert any("already installed" in line for line in lines)
    assert [p.name for p in (tmp_path / "models").iterdir()] == [models.ISNET_FILE]  # no partial files left


def test_a_damaged_chunk_is_refused_and_nothing_is_installed(tmp_path, pinned_payload):
    tarball = fake_npm_tarball(tmp_path / "data.tgz", pinned_payload, damage=True)
    with pytest.raises(models.ModelsNotInstalledError, match="damaged"):
        models.install(tmp_path / "models", tarball=tarball, log=lambda _: None)
    assert list((tmp_path / "models").iterdir()) == []


def test_a_file_that_differs_from_the_pinned_hash_is_reinstalled(tmp_path, pinned_payload):
    target = tmp_path / "models" / models.ISNET_FILE
    target.parent.mkdir()
    target.write_bytes(b"\x00" * len(pinned_payload))  # right size, wrong content
    report = models.install(target.parent, tarball=fake_npm_tarball(tmp_path / "d.tgz", pinned_payload))
    assert report.action == "installed" and target.read_bytes() == pinned_payload


def test_model_dir_defaults_to_the_environment_prefix_and_is_overridable(tmp_path):
    assert models.model_dir({}) == Path(sys.prefix) / "share" / "segflow" / "models"
    assert models.model_dir({models.ENV_MODEL_DIR: str(tmp_path)}) == tmp_path


def test_missing_weights_name_the_setup_command(tmp_path):
    with pytest.raises(models.ModelsNotInstalledError) as info:
        models.check_installed(tmp_path)
    assert "make setup" in str(info.value) and info.value.code == "ModelsNotInstalled"


def test_models_cli_check_reports_missing_weights_with_exit_1(tmp_path, capsys):
    import argparse

    parser = argparse.ArgumentParser()
    models_cli.configure_parser(parser)
    code = models_cli.run(parser.parse_args(["check", "--dir", str(tmp_path)]))
    assert code == 1 and "make setup" in capsys.readouterr().err


def test_importing_the_models_command_stays_light():
    heavy = "{'numpy', 'onnxruntime', 'mediapipe', 'cv2'}"
    probe = f"import sys, segflow_engine.models_cli; print(sorted({heavy} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
