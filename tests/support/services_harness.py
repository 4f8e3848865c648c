"""Functional-test harness for the two functions: local buckets, a fake vision service, result files.

Everything runs on 127.0.0.1: objects live in a `LocalDirStorage` under a temporary directory and are
handed to the API as presigned loopback URLs (the harness pins `SEGFLOW_INPUT_URL=presign`; pass
`input_url="upload"` for the upload path, whose `AuthorizeFileUpload` the fake service answers with the
engine's temporary bucket on its own port); `FakeVision` answers imageseg/videoseg through `FakeApi`
(which checks every request's signature), *fetches* each input URL as the real service would, and
publishes its results on a `ResultServer` whose URLs can be made to expire or fail. The handlers
themselves (`functions/*/index.py`) are loaded from their files and driven with FC-shaped events.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import requests

from segflow.client import PicWishClient, VisionClient
from segflow.errors import ObjectNotFoundError
from segflow.ratelimit import RateLimiter
from segflow.retry import RetryPolicy
from segflow.services.deps import Deps
from segflow.settings import Settings
from segflow.storage.base import Storage
from segflow_cli.localbucket import LocalDirStorage
from tests.conftest import REPO_ROOT
from tests.support.fake_api import TEST_CREDENTIALS, FakeApi, RecordedRequest, Reply, new_request_id
from tests.support.loopback_files import answer_file
from tests.support.loopback_http import LoopbackServer

BUCKET = "segflow-demo"
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".flv")


# ---------------------------------------------------------------------------------------- result files


class ResultServer:
    """Serves result files by URL; `expire(url)` makes it answer 403 (as an expired OSS URL does),
    `fail_next(n, status)` answers the next n downloads with `status`, `throttle_next(n, rate)` sends the
    next n downloads at `rate` bytes per second (a slow link to a large result)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.expired: set[str] = set()
        self.downloads: Counter[str] = Counter()
        self._failures: list[int] = []
        self._throttles: list[float] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                name = unquote(urlsplit(self.path).path.lstrip("/"))
                with outer._lock:
                    outer.downloads[name] += 1
                    status = outer._failures.pop(0) if outer._failures else None
                    rate = outer._throttles.pop(0) if outer._throttles and status is None else None
                    data = outer.files.get(name)
                    if status is None and name in outer.expired:
                        status = 403
                answer_file(self, status, data, rate)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = LoopbackServer(Handler)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def add(self, data: bytes, extension: str) -> str:
        name = f"results/{uuid.uuid4().hex}{extension}"
        with self._lock:
            self.files[name] = data
        return f"{self.base_url}/{name}?Expires=1800&Signature=result"

    def expire(self, url: str) -> None:
        with self._lock:
            self.expired.add(unquote(urlsplit(url).path.lstrip("/")))

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._failures.extend([status] * count)

    def throttle_next(self, count: int, bytes_per_second: float) -> None:
        with self._lock:
            self._throttles.extend([bytes_per_second] * count)

    def close(self) -> None:
        self._server.close()


# ---------------------------------------------------------------------------------------- fake service


def half_mask_cutout(image_bytes: bytes) -> bytes:
    """What the fake 'segments': the left half of the image kept (alpha 255), the right half cut."""
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as opened:
        image = opened.convert("RGBA")
    width, height = image.size
    alpha = Image.new("L", (width, height), 0)
    alpha.paste(255, (0, 0, max(1, width // 2), height))
    image.putalpha(alpha)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def refined_mask(image_bytes: bytes) -> bytes:
    """What the fake RefineMask 'refines': a one-channel mask of the image's size, its left half kept."""
    from PIL import Image

    with Image.open(io.BytesIO(image_bytes)) as opened:
        width, height = opened.size
    mask = Image.new("L", (width, height), 0)
    mask.paste(255, (0, 0, max(1, width // 2), height))
    buffer = io.BytesIO()
    mask.save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class FakeJob:
    job_id: str
    action: str
    input_bytes: bytes
    polls: int = 0
    statuses: list[str] = field(default_factory=list)  # scripted statuses, then PROCESS_SUCCESS
    result_url: str | None = None


class FakeVision:
    """imageseg / videoseg semantics on top of `FakeApi`: fetch the input URL, answer like the service."""

    def __init__(self, api: FakeApi, results: ResultServer) -> None:
        self.api = api
        self.results = results
        self.jobs: dict[str, FakeJob] = {}
        self.fetched: list[str] = []
        self.job_statuses: list[str] = ["PROCESSING"]  # what a new job reports before PROCESS_SUCCESS
        self.poll_delay = 0.0
        self.segment_delay = 0.0  # seconds a synchronous segmentation takes (to make calls overlap)
        self.expire_results = 0  # how many PROCESS_SUCCESS result URLs to hand out already expired
        self.video_result: bytes | None = None  # the "mask video" of video jobs (default: the input)
        self.fetched_sizes: list[tuple[int, int]] = []  # pixel sizes of the images the service fetched
        self._lock = threading.Lock()
        api.set_handler(self._handle)

    def _fetch(self, url: str) -> bytes:
        response = requests.get(url, timeout=10)
        response.raise_for_status()
        data = response.content
        size = _image_size(data)
        with self._lock:
            self.fetched.append(url)
            if size is not None:
                self.fetched_sizes.append(size)
        return data

    def _handle(self, request: RecordedRequest) -> Reply | None:
        action = request.action
        params = request.params
        if action == "AuthorizeFileUpload":
            return self._authorize(params)
        if action == "PicWish":
            data = self._fetch(params["image_url"])
            return Reply.picwish(image=self.results.add(half_mask_cutout(data), ".png"))
        if action == "GetAsyncJobResult":
            return self._poll(params.get("JobId", ""))
        if action in ("SegmentVideoBody", "SegmentHalfBody", "SegmentGreenScreenVideo"):
            url = params.get("VideoUrl") or params.get("VideoURL") or ""
            return self._submit(action, url)
        if action == "SegmentBody" and params.get("Async", "").lower() == "true":
            return self._submit(action, params.get("ImageURL", ""))
        if self.segment_delay:
            time.sleep(self.segment_delay)
        if action in ("SegmentCommonImage", "SegmentBody", "SegmentCommodity"):
            data = self._fetch(params["ImageURL"])
            return Reply.ok({"ImageURL": self.results.add(half_mask_cutout(data), ".png")})
        if action in ("SegmentHead", "SegmentFace", "SegmentHair"):
            data = self._fetch(params["ImageURL"])
            return Reply.ok({"Elements": self._elements(data, named=False)})
        if action == "RefineMask":
            # The service fetches both inputs; its refined mask is the image's size (one L channel).
            data = self._fetch(params["ImageURL"])
            self._fetch(params["MaskImageURL"])
            return Reply.ok({"Elements": [{"ImageURL": self.results.add(refined_mask(data), ".png")}]})
        if action == "ParseFace":
            data = self._fetch(params["ImageURL"])
            return Reply.ok(
                {
                    "OriginImageURL": self.results.add(data, ".png"),
                    "Elements": self._elements(data, named=True),
                }
            )
        return None

    def _authorize(self, params: Mapping[str, str]) -> Reply:
        """openplatform's AuthorizeFileUpload, answered by the engine's temporary bucket on loopback."""
        from segflow.errors import SegflowError
        from tests.support.temp_bucket import TempBucketServer

        try:
            grant = TempBucketServer.shared().bucket.authorize(params)
        except SegflowError as error:
            return Reply.error(error.http_status or 400, error.code, error.message)
        return Reply.json({"RequestId": new_request_id(), **grant})

    def _elements(self, data: bytes, *, named: bool) -> list[dict[str, Any]]:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as opened:
            width, height = opened.size
        boxes = [(0, 0, width // 2, height // 2), (width // 2, height // 2, width // 4, height // 4)]
        names = ["skin", "nose"]
        elements = []
        for (x, y, w, h), name in zip(boxes, names, strict=True):
            crop = Image.new("RGBA", (w, h), (200, 100, 50, 255))
            buffer = io.BytesIO()
            crop.save(buffer, "PNG")
            element: dict[str, Any] = {"ImageURL": self.results.add(buffer.getvalue(), ".png")}
            if named:
                element["Name"] = name
            else:
                element.update({"X": x, "Y": y, "Width": w, "Height": h})
            elements.append(element)
        return elements

    def _submit(self, action: str, url: str) -> Reply:
        data = self._fetch(url)
        job_id = new_request_id()
        with self._lock:
            self.jobs[job_id] = FakeJob(job_id, action, data, statuses=list(self.job_statuses))
        return Reply.ok({"JobId": job_id} if action == "SegmentBody" else None, request_id=job_id)

    def _poll(self, job_id: str) -> Reply:
        if self.poll_delay:
            time.sleep(self.poll_delay)
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                return Reply.error(400, "InvalidParameter", f"no job {job_id}")
            job.polls += 1
            status = job.statuses.pop(0) if job.statuses else "PROCESS_SUCCESS"
        document: dict[str, Any] = {"JobId": job_id, "Status": status}
        if status == "PROCESS_SUCCESS":
            if job.action == "SegmentBody":
                job.result_url = self.results.add(half_mask_cutout(job.input_bytes), ".png")
                document["Result"] = json.dumps({"ImageURL": job.result_url})
            else:
                # The "mask video": the input's own bytes stand in for it (size and type are what matter).
                job.result_url = self.results.add(self.video_result or job.input_bytes, ".mp4")
                key = "VideoURL" if job.action == "SegmentGreenScreenVideo" else "VideoUrl"
                document["Result"] = json.dumps({key: job.result_url})
            with self._lock:
                expire = self.expire_results > 0
                self.expire_results -= 1 if expire else 0
            if expire:
                self.results.expire(job.result_url)
        elif status in ("PROCESS_FAILED", "TIMEOUT_FAILED", "LIMIT_RETRY_FAILED"):
            document["ErrorCode"] = "InvalidFile.Content" if status == "PROCESS_FAILED" else status
            document["ErrorMessage"] = f"scripted {status}"
        return Reply.ok(document)


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as opened:
            return opened.size
    except (UnidentifiedImageError, OSError):
        return None


# ---------------------------------------------------------------------------------------- media


def jpeg(size: tuple[int, int] = (640, 480)) -> bytes:
    """A photo-like JPEG (a gradient, so scaling is visible)."""
    from PIL import Image

    width, height = size
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(size: tuple[int, int] = (320, 240), mode: str = "RGB") -> bytes:
    from PIL import Image

    image = Image.linear_gradient("L").resize(size).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def mp4() -> bytes:
    from tests.support.media_files import cached_video

    return cached_video("mp4", "libx264", 320, 240, 4)


def media_for_key(key: str) -> bytes:
    return mp4() if key.lower().endswith(VIDEO_SUFFIXES) else jpeg()


# ---------------------------------------------------------------------------------------- events


def oss_record(
    key: str, *, bucket: str = BUCKET, region: str = "cn-shanghai", size: int = 1, etag: str = "0" * 32
) -> dict[str, Any]:
    """One OSS trigger record shaped as FC delivers it (the FC docs' OSS event template), the key exactly
    as given (tests of how raw and encoded keys are read)."""
    from segflow.events import object_created_event

    event = object_created_event(
        bucket,
        key,
        etag=etag,
        size=size,
        region=region,
        event_time="2026-11-22T01:00:00.000Z",
        account="1234567890",
        request_id=new_request_id(),
        rule_id="segflow-test",
        encode_key=False,
    )
    record: dict[str, Any] = event["events"][0]
    return record


def oss_event(*keys: str, region: str = "cn-shanghai") -> dict[str, Any]:
    return {"events": [oss_record(key, region=region) for key in keys]}


def event_keys(event: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(bucket, decoded key) of every record of an OSS event."""
    from segflow.events import OssEvent

    return [(record.bucket, record.key) for record in OssEvent.from_payload(dict(event))]


# ---------------------------------------------------------------------------------------- handlers


def functions_dir() -> Path:
    """Where the handlers' code folders are: the checkout's functions/, or under `make test-fc` the copy
    deployed beside the unzipped layer (SEGFLOW_TEST_CODE_DIR)."""
    override = os.environ.get("SEGFLOW_TEST_CODE_DIR")
    return Path(override) if override else REPO_ROOT / "functions"


def load_handler(function: str) -> ModuleType:
    """`functions/<function>/index.py` as its own module (both files are called index.py)."""
    path = functions_dir() / function / "index.py"
    spec = importlib.util.spec_from_file_location(f"segflow_function_{function}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fc_context(function: str = "segflow-on-upload", *, timeout: int = 600) -> Any:
    """The context FC's python3.10 runtime passes (segflow_cli.fccontext: exactly the documented
    attributes). `credentials` is None: the harness's clients carry the test keys themselves."""
    from segflow_cli.fccontext import FcContext, FcFunction, FcService

    return FcContext(
        request_id=new_request_id(),
        region="cn-shanghai",
        account_id="1234567890",
        function=FcFunction(name=function, timeout=timeout),
        credentials=None,
        service=FcService(),
    )


def use_local_buckets_for_oss(monkeypatch: Any, root: Path) -> None:
    """Let a handler that builds its own deps from the environment (as on FC) find its buckets in `root`:
    the layer only knows OSS, so its OSS adapter factory is pointed at local directories."""
    monkeypatch.setattr(
        "segflow.storage.oss.oss_storage_from_settings",
        lambda settings, bucket, context=None, *, region=None: LocalDirStorage(root, bucket),
    )


class Clock:
    def __init__(self, now: float | None = None) -> None:
        self.now = time.time() if now is None else now
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


FAST_RETRY = RetryPolicy(max_attempts=4, base_delay=0.001, max_delay=0.005, max_total=2.0)
# The production bound on in-place storage retries (3 attempts), with millisecond delays.
FAST_STORAGE_RETRY = RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.005, max_total=2.0)


@dataclass
class Harness:
    """One deployment on loopback: a bucket directory, the fake service, the deps both handlers use."""

    root: Path
    api: FakeApi
    results: ResultServer
    vision: FakeVision
    clock: Clock
    settings: Settings
    deps: Deps
    storages: dict[str, Storage] = field(default_factory=dict)

    @property
    def storage(self) -> Storage:
        return self.deps.storage_for(BUCKET)

    def put(self, key: str, data: bytes, bucket: str = BUCKET) -> None:
        self.deps.storage_for(bucket).put_bytes(key, data)

    def stage(self, event: Mapping[str, Any], *, skip_own: bool = True) -> list[str]:
        """Put a real image or video at every key of `event` (not under our prefixes); returns the keys."""
        keys = []
        for bucket, key in event_keys(event):
            if skip_own and self.deps.layout.is_own(key):
                continue
            self.put(key, media_for_key(key), bucket)
            keys.append(key)
        return keys

    def keys(self, prefix: str = "", bucket: str = BUCKET) -> list[str]:
        return sorted(info.key for info in self.deps.storage_for(bucket).list(prefix))

    def manifest(self, key: str, action: str) -> dict[str, Any]:
        data = self.storage.get_bytes(self.deps.layout.manifest_key(key, action))
        loaded: dict[str, Any] = json.loads(data)
        return loaded

    def failure(self, key: str) -> dict[str, Any] | None:
        try:
            loaded: dict[str, Any] = json.loads(self.storage.get_bytes(self.deps.layout.failure_key(key)))
        except ObjectNotFoundError:
            return None
        return loaded

    def results_for(self, key: str) -> list[str]:
        """Manifests written for `key` (one per action)."""
        prefix = f"{self.deps.layout.output_prefix}{key}/"
        return [
            k
            for k in self.keys(prefix)
            if k.endswith("/manifest.json") and k.count("/") == prefix.count("/") + 1
        ]

    def on_upload(self, event: Mapping[str, Any] | bytes, context: Any = None) -> dict[str, Any]:
        """Invoke the on_upload handler as FC does (event as bytes); its JSON answer, decoded."""
        handler = load_handler("on_upload")
        payload = event if isinstance(event, bytes) else json.dumps(event).encode()
        answer = handler.handler(payload, context or fc_context("segflow-on-upload"))
        assert isinstance(answer, str), "FC passes a handler's str back as the body (FC docs: return values)"
        result: dict[str, Any] = json.loads(answer)
        return result

    def collect(self, context: Any = None, payload: bytes = b"") -> dict[str, Any]:
        handler = load_handler("collect_jobs")
        answer = handler.handler(payload, context or fc_context("segflow-collect-jobs"))
        assert isinstance(answer, str), "FC passes a handler's str back as the body (FC docs: return values)"
        result: dict[str, Any] = json.loads(answer)
        return result


def build_deps(root: Path, api: FakeApi, clock: Callable[[], float], **overrides: Any) -> Deps:
    settings_fields: dict[str, Any] = {
        "imageseg_endpoint": api.url,
        "videoseg_endpoint": api.url,
        "picwish_endpoint": api.url,
        "openplatform_endpoint": api.url,
        # The existing tests watch the service fetch presigned loopback URLs; the upload path has its own.
        "input_url": "presign",
        "require_region": True,
        "collect_concurrency": 4,
        "lease_seconds": 120,
    }
    qps = float(overrides.pop("client_qps", 1000.0))
    init_fields = set(Deps.TUNABLES)
    deps_fields = {k: overrides.pop(k) for k in list(overrides) if k in init_fields}
    deps_fields.setdefault("storage_retry", FAST_STORAGE_RETRY)
    settings_fields.update(overrides)
    settings = Settings(**settings_fields)
    storages: dict[str, Storage] = {}
    lock = threading.Lock()

    def storage_for(bucket: str, region: str | None = None) -> Storage:
        with lock:
            if bucket not in storages:
                storages[bucket] = LocalDirStorage(root, bucket)
            return storages[bucket]

    limiter = RateLimiter(qps, burst=1 if qps < 1000 else 100)
    return Deps(
        settings=settings,
        storage_for=storage_for,
        vision=VisionClient(
            TEST_CREDENTIALS,
            endpoints=api.endpoints(),
            rate_limiter=limiter,
            upload_rate_limiter=limiter,
            retry=FAST_RETRY,
        ),
        http=requests.Session(),
        picwish=PicWishClient("test-appcode", endpoint=api.url, rate_limiter=limiter, retry=FAST_RETRY),
        clock=clock,
        download_timeout=10.0,
        buckets=(BUCKET,),
        **deps_fields,
    )


def harness(root: Path, api: FakeApi, results: ResultServer, **overrides: Any) -> Harness:
    from segflow.services.deps import use_handler_deps

    clock = Clock()
    deps = build_deps(root, api, clock, **overrides)
    use_handler_deps(deps)
    return Harness(
        root=root,
        api=api,
        results=results,
        vision=FakeVision(api, results),
        clock=clock,
        settings=deps.settings,
        deps=deps,
    )
