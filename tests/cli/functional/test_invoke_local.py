"""`segflow invoke` in local mode, end to end on loopback: the real handlers from functions/, the sample
events from events/, buckets as directories, and the fake vision service of the services harness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow_cli.main import main
from segflow_cli.urlserver import stop_background_server
from tests.conftest import EVENTS_DIR
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi
from tests.support.services_harness import FakeVision, ResultServer, jpeg, mp4

BUCKET = "segflow-demo"


@pytest.fixture
def vision(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeVision]:
    results = ResultServer()
    with FakeApi() as api:
        for name in ("SEGFLOW_IMAGESEG_ENDPOINT", "SEGFLOW_VIDEOSEG_ENDPOINT", "SEGFLOW_PICWISH_ENDPOINT"):
            monkeypatch.setenv(name, api.url)
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", TEST_CREDENTIALS.access_key_id)
        monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", TEST_CREDENTIALS.access_key_secret)
        monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
        monkeypatch.delenv("SEGFLOW_LOCAL_BUCKET_DIR", raising=False)
        monkeypatch.setenv("SEGFLOW_INPUT_URL", "presign")  # these tests watch presigned loopback URLs
        yield FakeVision(api, results)
    results.close()


@pytest.fixture(autouse=True)
def _stop_url_servers(tmp_path: Path) -> Iterator[None]:
    """Invoking signs input URLs through the bucket directory's background server: stop it after."""
    yield
    for root in (tmp_path, tmp_path / "buckets"):
        stop_background_server(root)


def put(root: Path, key: str, data: bytes) -> None:
    path = root / BUCKET / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def keys_under(root: Path, prefix: str) -> list[str]:
    bucket = root / BUCKET
    return sorted(
        p.relative_to(bucket).as_posix()
        for p in bucket.rglob("*")
        if p.is_file() and p.relative_to(bucket).as_posix().startswith(prefix)
    )


def invoke(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any]:
    status = main(["invoke", *argv])
    out = capsys.readouterr().out
    return status, json.loads(out)


def test_on_upload_image_event_stores_a_cutout(
    vision: FakeVision, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    put(tmp_path, "incoming/photos/person-001.jpg", jpeg())
    status, summary = invoke(
        capsys, "on_upload", str(EVENTS_DIR / "oss-put-image.json"), "--bucket-dir", str(tmp_path)
    )
    assert status == 0
    assert summary["records"] == 1 and summary["done"] == 1, summary
    outputs = keys_under(tmp_path, "segmented/incoming/photos/person-001.jpg/")
    assert any(key.endswith(".png") for key in outputs) and any(
        key.endswith("manifest.json") for key in outputs
    )
    # The service fetched the input over the loopback presigned URL, as it would from OSS.
    assert vision.fetched and vision.fetched[0].startswith("http://127.0.0.1:")


def test_video_is_submitted_then_collected_by_the_timer(
    vision: FakeVision, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vision.job_statuses = []
    put(tmp_path, "incoming/videos/dance-720p.mp4", mp4())
    status, submitted = invoke(
        capsys, "on_upload", str(EVENTS_DIR / "oss-put-video.json"), "--bucket-dir", str(tmp_path)
    )
    assert status == 0 and submitted["submitted"] == 1, submitted
    status, collected = invoke(
        capsys, "collect_jobs", str(EVENTS_DIR / "timer.json"), "--bucket-dir", str(tmp_path)
    )
    assert status == 0 and collected["done"] == 1, collected
    assert any(k.endswith(".mp4") for k in keys_under(tmp_path, "segmented/incoming/videos/dance-720p.mp4/"))


def test_own_output_event_calls_nothing(
    vision: FakeVision, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, summary = invoke(
        capsys, "on_upload", str(EVENTS_DIR / "oss-key-output-prefix.json"), "--bucket-dir", str(tmp_path)
    )
    assert status == 0 and summary["skipped"] == 1
    assert vision.api.count() == 0


def write_handler(functions_dir: Path, body: str) -> None:
    target = functions_dir / "on_upload" / "index.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(body, encoding="utf-8")


def test_handler_gets_bytes_and_an_fc_like_context(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-local")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "local-secret-value")
    monkeypatch.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", "CAIS-local-token")
    monkeypatch.delenv("SEGFLOW_LOCAL_BUCKET_DIR", raising=False)
    write_handler(
        tmp_path / "fn",
        "import os\n"
        "from segflow.services.deps import handler_deps\n"
        "def handler(event, context):\n"
        "    deps = handler_deps(context, os.environ)\n"
        "    storage = deps.storage_for('segflow-demo')\n"
        "    return {'event_type': type(event).__name__, 'event_len': len(event),\n"
        "            'request_id': context.request_id, 'region': context.region,\n"
        "            'function': [context.function.name, context.function.handler,\n"
        "                         context.function.timeout],\n"
        "            'ak': context.credentials.access_key_id, 'token': context.credentials.security_token,\n"
        "            'lambda_only': hasattr(context, 'get_remaining_time_in_millis'),\n"
        "            'bucket_dir': str(storage.root),\n"
        "            'object': storage.get_bytes('incoming/a.txt').decode(),\n"
        "            'env_untouched': 'SEGFLOW_LOCAL_BUCKET_DIR' not in os.environ}\n",
    )
    put(tmp_path / "buckets", "incoming/a.txt", b"hello")
    event = EVENTS_DIR / "oss-put-image.json"
    status, result = invoke(
        capsys,
        "on_upload",
        str(event),
        "--bucket-dir",
        str(tmp_path / "buckets"),
        "--functions-dir",
        str(tmp_path / "fn"),
        "--timeout",
        "30",
    )
    assert status == 0
    assert result["event_type"] == "bytes" and result["event_len"] == len(event.read_bytes())
    assert len(result["request_id"]) == 36 and result["region"] == "cn-shanghai"
    assert result["function"] == ["segflow-on-upload", "index.handler", 30]
    assert (result["ak"], result["token"]) == ("LTAI-local", "CAIS-local-token")
    assert result["lambda_only"] is False  # FC's context has function.timeout, no remaining-time method
    assert result["bucket_dir"] == str((tmp_path / "buckets").resolve())
    assert result["object"] == "hello" and result["env_untouched"] is True


def test_handler_exception_is_reported_with_a_non_zero_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "LTAI-local")  # invoke wants keys before it runs
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "local-secret-value")
    write_handler(tmp_path / "fn", "def handler(event, context):\n    raise RuntimeError('retry me')\n")
    status = main(
        [
            "invoke",
            "on_upload",
            str(EVENTS_DIR / "timer.json"),
            "--bucket-dir",
            str(tmp_path),
            "--functions-dir",
            str(tmp_path / "fn"),
        ]
    )
    captured = capsys.readouterr()
    assert status == 1
    assert json.loads(captured.out) == {"errorType": "RuntimeError", "errorMessage": "retry me"}
    assert "Traceback" in captured.err  # not a segflow error: a bug, its traceback helps


def test_missing_bucket_dir_and_missing_event_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["invoke", "on_upload", str(EVENTS_DIR / "timer.json")]) == 2
    assert main(["invoke", "on_upload", str(tmp_path / "nope.json"), "--bucket-dir", str(tmp_path)]) == 2
    assert "--bucket-dir" in capsys.readouterr().err
