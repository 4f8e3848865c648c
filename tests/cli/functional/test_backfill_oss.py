"""`segflow backfill` and `segflow redrive` on an OSS bucket through oss2, with the stubbed `oss2.Bucket` the
storage tests use (tests/support/oss_stub.py: ranged reads, put-if-absent, `list_objects_v2` paging
with `start_after`, and OSS's error answers as OSS gives them). The handlers run in this process with the
environment's AccessKey, as `--local` does against a real bucket; inputs reach the fake vision service the
default way (SEGFLOW_INPUT_URL=upload: AuthorizeFileUpload, then a form POST to its temporary bucket).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import oss2
import pytest
from pytest_mock import MockerFixture

from tests.support.fake_api import FakeApi, Reply
from tests.support.fc_standin import FcStandIn
from tests.support.ops import BUCKET, LAYOUT, clean_environment, point_at, run_cli
from tests.support.oss_stub import FakeOssBucket
from tests.support.services_harness import FakeVision, ResultServer, jpeg

REQUEST_ID = "5C1B138A109F4E405B2D8AEF"


def oss_error(status: int, code: str) -> oss2.exceptions.OssError:
    """An error as oss2 raises it for OSS's XML answer (its status, Code and request id)."""
    return oss2.exceptions.ServerError(
        status, {"x-oss-request-id": REQUEST_ID}, b"", {"Code": code, "Message": f"OSS says {code}"}
    )


class RefusingBucket(FakeOssBucket):
    """A bucket OSS refuses to list: `NoSuchBucket` (404) or `AccessDenied` (403)."""

    refusal: tuple[int, str] = (404, "NoSuchBucket")

    def list_objects_v2(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self._record("list_objects_v2", **kwargs)
        raise oss_error(*self.refusal)


@pytest.fixture
def oss(mocker: MockerFixture) -> dict[str, FakeOssBucket]:
    """The buckets oss2 reaches, by name: `segflow-demo` exists, any other name is refused."""
    buckets: dict[str, FakeOssBucket] = {BUCKET: FakeOssBucket(None, "oss-cn-shanghai.aliyuncs.com", BUCKET)}

    def make(auth: Any, endpoint: str, bucket_name: str, **kwargs: Any) -> FakeOssBucket:
        if bucket_name not in buckets:
            buckets[bucket_name] = RefusingBucket(auth, endpoint, bucket_name, **kwargs)
        return buckets[bucket_name]

    mocker.patch("oss2.Bucket", side_effect=make)
    return buckets


@pytest.fixture
def demo(oss: dict[str, FakeOssBucket], monkeypatch: pytest.MonkeyPatch, api: FakeApi) -> FakeOssBucket:
    clean_environment(monkeypatch)
    point_at(monkeypatch, api, input_url="upload")
    return oss[BUCKET]


@pytest.fixture
def vision(api: FakeApi, results: ResultServer) -> FakeVision:
    return FakeVision(api, results)


def upload(bucket: FakeOssBucket, count: int) -> list[str]:
    keys = [f"incoming/photos/img-{i:03d}.jpg" for i in range(count)]
    for key in keys:
        bucket.put_object(key, jpeg((64, 48)))
    return keys


def manifests(bucket: FakeOssBucket) -> dict[str, str]:
    found = {}
    for key, (data, _, _) in bucket.objects.items():
        if key.startswith(LAYOUT.output_prefix) and key.endswith("/manifest.json"):
            manifest = json.loads(data)
            found[manifest["Source"]["Key"]] = manifest["Action"]
    return found


def test_backfill_on_oss_processes_each_object_once_and_resumes_after_its_last_key(
    demo: FakeOssBucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = upload(demo, 7)

    assert run_cli(capsys, "backfill", BUCKET, "--local", "--limit", "4", "--batch", "2")[0] == 0
    assert sorted(manifests(demo)) == keys[:4]
    checkpoint = json.loads(demo.objects[LAYOUT.backfill_checkpoint_key][0])
    assert checkpoint["StartAfter"] == keys[3] and checkpoint["Finished"] is False

    demo.calls.clear()
    assert run_cli(capsys, "backfill", BUCKET, "--local", "--batch", "2")[0] == 0

    inputs = [c for c in demo.calls_to("list_objects_v2") if c["prefix"] == "incoming/"]
    assert inputs[0]["start_after"] == keys[3]  # OSS lists after the checkpoint's key
    assert sorted(manifests(demo)) == keys
    assert len(api.requests_for("SegmentCommonImage")) == 7  # one paid call each
    assert len(api.requests_for("AuthorizeFileUpload")) == 7
    for call in demo.calls_to("get_object"):
        if call["byte_range"] is not None:  # header probes read ranges the standard way
            assert call["headers"] == {"x-oss-range-behavior": "standard"}


def test_redrive_on_oss_after_the_role_is_fixed(
    demo: FakeOssBucket, vision: FakeVision, api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = upload(demo, 3)
    denied = Reply.error(403, "Forbidden.RAM", "User not authorized to operate on the specified resource.")
    api.queue("SegmentCommonImage", denied, denied, denied)
    assert run_cli(capsys, "backfill", BUCKET, "--local", "--keep-going")[0] == 1
    index = [k for k in demo.objects if k.startswith(LAYOUT.failure_index_prefix)]
    assert len(index) == 3 and all("/fault/Forbidden.RAM/" in k for k in index)

    status, out, _ = run_cli(capsys, "redrive", BUCKET, "--local")

    assert status == 0, out
    assert sorted(manifests(demo)) == keys
    assert not [k for k in demo.objects if k.startswith((LAYOUT.failure_index_prefix, LAYOUT.failed_prefix))]
    markers = [c for c in demo.calls_to("put_object") if "/redrives/" in c["key"]]
    assert len(markers) == 3 and all(c["headers"].get("x-oss-forbid-overwrite") == "true" for c in markers)


@pytest.fixture
def fc() -> Iterator[FcStandIn]:
    with FcStandIn() as standin:
        standin.deploy("segflow-on-upload")
        yield standin


@pytest.mark.parametrize("command", ["backfill", "redrive"])
@pytest.mark.parametrize("via", ["--local", "fc"])
@pytest.mark.parametrize(
    ("refusal", "message"),
    [
        ((404, "NoSuchBucket"), "does not exist (NoSuchBucket)"),
        ((403, "AccessDenied"), "may not list"),
    ],
)
def test_an_unknown_bucket_or_a_denied_listing_exits_2_and_sends_nothing(
    demo: FakeOssBucket,
    api: FakeApi,
    fc: FcStandIn,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    via: str,
    refusal: tuple[int, str],
    message: str,
) -> None:
    monkeypatch.setattr(RefusingBucket, "refusal", refusal)
    monkeypatch.setenv("SEGFLOW_FC_ENDPOINT", fc.url)
    how = ["--via", "fc"] if via == "fc" else [via]

    status, _, err = run_cli(capsys, command, "segflow-other", *how)

    assert status == 2 and message in err and "nothing was sent" in err
    assert api.requests == [] and fc.requests == []
