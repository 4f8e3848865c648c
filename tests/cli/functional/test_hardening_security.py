"""Secrets stay secret, the local engine refuses what the service refuses, presigned URLs die (issue 6).

GIVEN the handlers wired exactly as in Function Compute (settings and STS keys from the environment), a
fake imageseg/videoseg that echoes the token in a SignatureDoesNotMatch message as the real one does,
WHEN a full run happens (results, a queued video, throttling, a reset, a refused signature) with every
logger at DEBUG, THEN no AccessKey secret, STS token, AppCode or request signature appears in any log
line, summary, record or file in the bucket.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from segflow.client import Endpoints, VisionClient
from segflow.errors import ApiError, SegflowError
from segflow.services.deps import use_handler_deps
from segflow_cli.localbucket import LocalDirStorage, LocalPresignServer
from tests.support.engine_server import StubActions, call_rpc, make_png, serve_files, start_engine
from tests.support.fake_api import TEST_STS_CREDENTIALS, FakeApi, RecordedRequest, Reply
from tests.support.services_harness import (
    BUCKET,
    Clock,
    FakeVision,
    ResultServer,
    fc_context,
    jpeg,
    load_handler,
    mp4,
    oss_event,
    use_local_buckets_for_oss,
)

APPCODE = "appcode-5f0c1d2e3b4a69788796a5b4c3d2e1f0"


@pytest.fixture(autouse=True)
def _forget_deps() -> Iterator[None]:
    """Handlers build their deps from the environment here; leave no deps or logger level behind."""
    segflow_logger = logging.getLogger("segflow")
    level = segflow_logger.level
    use_handler_deps(None)
    yield
    use_handler_deps(None)
    segflow_logger.setLevel(level)


def signatures_seen(api: FakeApi) -> set[str]:
    """Every request signature the service received (v1 `Signature`, v3 `Authorization: …Signature=`)."""
    found: set[str] = set()
    for request in api.requests:
        if request.params.get("Signature"):
            found.add(request.params["Signature"])
        match = re.search(r"Signature=([0-9a-fA-F]+)", request.headers.get("authorization", ""))
        if match:
            found.add(match.group(1))
    return found


def echoing_signature_refusal(request: RecordedRequest) -> Reply:
    """What imageseg answers to a bad v1/v3 signature: its own string-to-sign, token included."""
    token = request.headers.get("x-acs-security-token") or request.params.get("SecurityToken", "")
    signature = request.params.get("Signature") or request.headers.get("authorization", "")
    return Reply.error(
        400,
        "SignatureDoesNotMatch",
        "Specified signature is not matched with our calculation. server string to sign is:"
        f"POST&%2F&AccessKeyId%3D{request.params.get('AccessKeyId', '')}%26SecurityToken%3D{token}"
        f" (you sent {signature})",
    )


def test_no_secret_token_or_signature_in_any_log_line_record_or_file(
    tmp_path: Path,
    api: FakeApi,
    results: ResultServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = tmp_path / "buckets"
    creds = TEST_STS_CREDENTIALS
    use_local_buckets_for_oss(monkeypatch, root)
    for name, value in {
        "SEGFLOW_IMAGESEG_ENDPOINT": api.url,
        "SEGFLOW_VIDEOSEG_ENDPOINT": api.url,
        "SEGFLOW_PICWISH_APPCODE": APPCODE,
        "SEGFLOW_QPS": "500",
        "SEGFLOW_INPUT_URL": "presign",  # presigned URLs carry the STS token this test hunts for
        "SEGFLOW_LOG_LEVEL": "DEBUG",  # the functions' own lines at DEBUG too, as a user may set it
        "ALIBABA_CLOUD_ACCESS_KEY_ID": creds.access_key_id,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": creds.access_key_secret,
        "ALIBABA_CLOUD_SECURITY_TOKEN": creds.security_token or "",
    }.items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.DEBUG)
    vision = FakeVision(api, results)
    service = vision._handle
    refuse_next = threading.Event()

    def handler(request: RecordedRequest) -> Reply | None:
        if refuse_next.is_set() and request.action == "SegmentCommonImage":
            refuse_next.clear()
            return echoing_signature_refusal(request)
        return service(request)

    api.set_handler(handler)
    storage = LocalDirStorage(root, BUCKET)
    keys = ["incoming/ok/one.jpg", "incoming/ok/照片 二.jpg", "incoming/ok/three.jpg", "incoming/ok/clip.mp4"]
    for key in keys:
        storage.put_bytes(key, mp4() if key.endswith(".mp4") else jpeg((200, 150)))
    refused = "incoming/refused/four.jpg"
    storage.put_bytes(refused, jpeg((200, 150)))

    on_upload, collect = load_handler("on_upload"), load_handler("collect_jobs")
    outputs: list[Any] = []
    api.queue("SegmentCommonImage", Reply.error(429, "Throttling.User"), Reply.connection_reset())
    for key in keys:
        outputs.append(json.loads(on_upload.handler(json.dumps(oss_event(key)).encode(), fc_context())))
    refuse_next.set()
    # A refused signature is a deployment fault: the handler raises so FC retries, and the failure record
    # says so (the object stays retryable until the keys are fixed).
    with pytest.raises(SegflowError) as refusal:
        on_upload.handler(json.dumps(oss_event(refused)).encode(), fc_context())
    outputs.append(refusal.value.to_record())
    for _ in range(2):
        timer = json.dumps({"payload": json.dumps({"buckets": [BUCKET]})}).encode()
        outputs.append(json.loads(collect.handler(timer, fc_context("segflow-collect-jobs"))))

    # The run did what it should (otherwise the grep below proves little).
    assert [o.get("done", 0) + o.get("submitted", 0) for o in outputs[:4]] == [1, 1, 1, 1]
    assert outputs[4]["code"] == "SignatureDoesNotMatch"
    (failure_key,) = [p for p in root.rglob("*.json") if "segflow-failed" in p.parts]
    failure = json.loads(failure_key.read_text(encoding="utf-8"))
    assert (failure["Code"], failure["Fault"]) == ("SignatureDoesNotMatch", True)
    assert sum(o.get("done", 0) for o in outputs[5:]) == 1
    assert api.count("SegmentCommonImage") == 3 + 2 + 1  # three results, a 429, a reset, the refusal

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    lines = [formatter.format(record) for record in caplog.records]
    captured = capsys.readouterr()
    texts = {
        **{f"log {i}": line for i, line in enumerate(lines)},
        "stdout": captured.out,
        "stderr": captured.err,
        "summaries": json.dumps(outputs, ensure_ascii=False),
    }
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix in (".json", ".txt", ".log") or path.stat().st_size < 64 * 1024:
            texts[str(path.relative_to(root))] = path.read_bytes().decode("utf-8", "replace")
    assert any("segflow-failed/" in name for name in texts), "the failure record was not written"
    assert len(lines) > 10, "DEBUG logging was not captured"
    segflow_debug = [r for r in caplog.records if r.name.startswith("segflow") and r.levelno == logging.DEBUG]
    assert segflow_debug, "SEGFLOW_LOG_LEVEL=DEBUG did not reach the functions' loggers"

    signatures = signatures_seen(api)
    assert len(signatures) >= 6
    forbidden = {
        "AccessKey secret": [creds.access_key_secret],
        "STS token": [creds.security_token or ""],
        "AppCode": [APPCODE],
        "request signature": sorted(signatures),
    }
    leaks = [
        f"{what} in {where}"
        for what, needles in forbidden.items()
        for where, text in texts.items()
        for needle in needles
        if needle and needle in text
    ]
    assert not leaks, leaks


# ------------------------------------------------------------------------------------ the local engine


@pytest.mark.parametrize("signature", ["v1", "v3"])
def test_engine_serves_segflow_and_refuses_unsigned_tampered_replayed_and_stale_calls(signature: str) -> None:
    from datetime import datetime, timedelta, timezone

    with (
        serve_files({"photo.png": make_png(64, 48, channels=3)}) as files,
        start_engine(actions=StubActions()) as engine,
    ):
        url = files.url("photo.png")
        endpoints = Endpoints(imageseg=engine.base_url, videoseg=engine.base_url)
        sent: list[requests.PreparedRequest] = []
        session = requests.Session()
        session.hooks["response"].append(lambda response, **_: sent.append(response.request))
        client = VisionClient(
            engine.credentials, endpoints=endpoints, signature_version=signature, session=session
        )
        # segflow's own client is answered …
        result = client.segment("SegmentCommonImage", url)
        assert result.image_url and result.image_url.startswith(engine.base_url)
        (original,) = sent

        def code_of(response: requests.Response) -> str:
            return str(response.json().get("Code"))

        # … a replay of that very request is refused …
        replayed = requests.Session().send(original.copy(), timeout=10)
        assert (replayed.status_code, code_of(replayed)) == (400, "SignatureNonceUsed")
        # … so is the same request with its ImageURL swapped …
        tampered = original.copy()
        assert tampered.url is not None
        tampered.url = tampered.url.replace("photo.png", "other.png")
        if signature == "v1":
            tampered.body = (tampered.body or "").replace("photo.png", "other.png")  # type: ignore[operator]
            tampered.headers["Content-Length"] = str(len(tampered.body or ""))
        answer = requests.Session().send(tampered, timeout=10)
        assert answer.status_code == 400 and code_of(answer) in (
            "SignatureDoesNotMatch",
            "SignatureNonceUsed",
        )
        fresh_tamper = call_rpc(
            engine,
            "SegmentCommonImage",
            {"ImageURL": url},
            signature=signature,
            tamper=lambda p: p.update(ImageURL=files.url("other.png")),
        )
        assert (fresh_tamper.status_code, code_of(fresh_tamper)) == (400, "SignatureDoesNotMatch")
        # … one signed 20 minutes ago …
        stale = call_rpc(
            engine,
            "SegmentCommonImage",
            {"ImageURL": url},
            signature=signature,
            now=datetime.now(timezone.utc) - timedelta(minutes=20),
        )
        assert (stale.status_code, code_of(stale)) == (400, "InvalidTimeStamp.Expired")
        # … one not signed at all …
        unsigned = requests.get(
            engine.base_url + "/",
            params={"Action": "SegmentCommonImage", "Version": "2019-12-30", "ImageURL": url},
            timeout=10,
        )
        assert unsigned.status_code in (400, 401, 403) and code_of(unsigned) in (
            "MissingParameter",
            "IncompleteSignature",
            "MissingAccessKeyId",
        )
        # … and segflow's client with a wrong secret gets the service's code once, not a retry storm.
        wrong = VisionClient(
            type(engine.credentials)(engine.access_key_id, "not-the-secret"),
            endpoints=endpoints,
            signature_version=signature,
            session=session,
        )
        before = len(sent)
        with pytest.raises(ApiError) as refused:
            wrong.segment("SegmentCommonImage", url)
        assert refused.value.code == "SignatureDoesNotMatch"
        assert len(sent) == before + 1
        assert files.requests.count("photo.png") == 1  # only the accepted call fetched the input


# ------------------------------------------------------------------------------------ presigned URLs


def test_presigned_input_urls_expire_and_cannot_be_stretched(tmp_path: Path) -> None:
    clock = Clock(now=1_800_000_000.0)
    server = LocalPresignServer(clock=clock)
    try:
        storage = LocalDirStorage(tmp_path, BUCKET, presign_server=server)
        storage.put_bytes("incoming/photo.jpg", b"0123456789" * 10)
        url = storage.presign_get("incoming/photo.jpg", 60)
        assert requests.get(url, timeout=5).status_code == 200
        ranged = requests.get(url, headers={"Range": "bytes=0-9"}, timeout=5)
        assert (ranged.status_code, ranged.content) == (206, b"0123456789")

        stretched = re.sub(r"Expires=(\d+)", lambda m: f"Expires={int(m.group(1)) + 3600}", url)
        assert requests.get(stretched, timeout=5).status_code == 403
        other_key = url.replace("photo.jpg", "other.jpg")
        assert requests.get(other_key, timeout=5).status_code == 403

        clock.advance(60)
        assert requests.get(url, timeout=5).status_code == 200  # valid through its last second
        clock.advance(1)
        assert requests.get(url, timeout=5).status_code == 403
    finally:
        server.close()
