"""What the `segflow backfill` / `segflow redrive` tests share: a bucket folder with real files, the
environment a user would set, and the command run as the user runs it (`segflow_cli.main.main`)."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from segflow.failure_records import FailureRecords
from segflow.layout import BucketLayout
from segflow_cli.localbucket import LocalDirStorage
from segflow_cli.main import main
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi
from tests.support.services_harness import jpeg, mp4

BUCKET = "segflow-demo"
LAYOUT = BucketLayout("segmented/", "segflow-jobs/", "segflow-failed/", "incoming/")


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing of the machine's own configuration leaks into a test."""
    import os

    for name in list(os.environ):
        if name.startswith(("SEGFLOW_", "ALIBABA_CLOUD_", "FC_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name, raising=False)


def point_at(
    monkeypatch: pytest.MonkeyPatch, api: FakeApi, *, qps: float = 100.0, input_url: str = "presign"
) -> None:
    """The variables a user sets to run the handlers here against the (fake) vision service."""
    for name in ("IMAGESEG", "VIDEOSEG", "PICWISH", "OPENPLATFORM"):
        monkeypatch.setenv(f"SEGFLOW_{name}_ENDPOINT", api.url)
    monkeypatch.setenv("SEGFLOW_INPUT_URL", input_url)
    monkeypatch.setenv("SEGFLOW_REQUIRE_REGION", "false")
    monkeypatch.setenv("SEGFLOW_QPS", str(qps))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", TEST_CREDENTIALS.access_key_id)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", TEST_CREDENTIALS.access_key_secret)
    # FC's redelivery is imitated with seconds of backoff; the tests keep the order, not the wait.
    monkeypatch.setattr("segflow_cli.senders.REDELIVERY_BASE_DELAY", 0.01)


def local_bucket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> Bucket:
    """An empty bucket folder under `tmp_path`, and the environment of a user pointing segflow at `api`."""
    clean_environment(monkeypatch)
    point_at(monkeypatch, api)
    (tmp_path / "buckets" / BUCKET).mkdir(parents=True)
    return Bucket(tmp_path / "buckets")


@dataclass
class Bucket:
    """A local-directory bucket `<root>/<BUCKET>/`."""

    root: Path

    @property
    def storage(self) -> LocalDirStorage:
        return LocalDirStorage(self.root, BUCKET)

    def put(self, key: str, data: bytes) -> str:
        return self.storage.put_bytes(key, data)

    def images(self, count: int, folder: str = "incoming/photos") -> list[str]:
        keys = [f"{folder}/img-{i:05d}.jpg" for i in range(count)]
        data = jpeg((64, 48))
        for key in keys:
            self.put(key, data)
        return keys

    def video(self, key: str = "incoming/clips/walk.mp4") -> str:
        self.put(key, mp4())
        return key

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(info.key for info in self.storage.list(prefix))

    def manifests(self) -> dict[str, str]:
        """source key → action of every stored result."""
        found = {}
        for key in self.keys(LAYOUT.output_prefix):
            if key.endswith("/manifest.json"):
                manifest = json.loads(self.storage.get_bytes(key))
                found[manifest["Source"]["Key"]] = manifest["Action"]
        return found

    def failures(self) -> dict[str, dict[str, Any]]:
        """source key → failure record, read through the index (so the index is checked too)."""
        records = FailureRecords(self.storage, LAYOUT)
        found = {}
        for entry in records.entries():
            key = records.source_key(entry)
            assert key is not None, f"index entry {entry.index_key} names no key"
            document = records.read(key)
            assert document is not None, f"index entry of {key} without its record"
            found[key] = document
        assert len(found) == len(list(records.entries())), "one index entry per failure record"
        return found

    def snapshot(self) -> dict[str, float]:
        return {str(p.relative_to(self.root)): p.stat().st_mtime for p in self.root.rglob("*") if p.is_file()}


def submitted_keys(
    api: FakeApi, action: str = "SegmentCommonImage", input_prefix: str = "incoming/"
) -> Counter[str]:
    """Segmentation calls per source key, from the presigned input URLs the service was given."""
    counted: Counter[str] = Counter()
    for request in api.requests_for(action):
        path = unquote(urlsplit(request.params.get("ImageURL") or request.params.get("VideoUrl") or "").path)
        counted[path[path.index(input_prefix) :] if input_prefix in path else path] += 1
    return counted


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """`segflow <args>` in this process; (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err
