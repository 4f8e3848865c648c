"""The files of a result and how result URLs get into the bucket; manifests and failure documents.

Result files go to `<output>/<source key>/<action>/` (`segflow.layout`): `cutout.png` | `mask.png` |
`mask.mp4` | … , one `element-<i>.png` / `<Name>.png` per element (ParseFace: part names), and
`manifest.json`, written last: its presence means the result is complete.

Result URLs expire (30 minutes; PicWish 1 hour), so they are copied at once, streamed from the HTTP answer
into `Storage.put_stream` so a large video never sits in memory.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests

from segflow.errors import DeadlineError, ResultDownloadError, SegflowError
from segflow.layout import BucketLayout
from segflow.records import JobRecord
from segflow.results import Element, SegmentResult
from segflow.storage.base import Storage
from segflow.values import Value

if TYPE_CHECKING:
    from segflow.deadline import Deadline

# Small enough that a trickling download is checked against the deadline often; `put_stream` re-cuts the
# chunks into parts anyway.
DOWNLOAD_CHUNK = 64 * 1024
EXPIRED_STATUSES = frozenset({403, 404, 410})

_CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".json": "application/json",
}


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class OutputFile(Value):
    """One result file to fetch: where it comes from and its name in the result folder."""

    role: str  # "cutout" | "mask" | "origin" | "video" | "element"
    url: str
    name: str
    element_index: int | None = None


def content_type_for(name: str) -> str:
    for extension, content_type in _CONTENT_TYPES.items():
        if name.lower().endswith(extension):
            return content_type
    return "application/octet-stream"


def url_extension(url: str, default: str) -> str:
    path = urlsplit(url).path
    dot = path.rfind(".")
    if dot != -1 and "/" not in path[dot:]:
        extension = path[dot:].lower()
        if extension in _CONTENT_TYPES and extension != ".json":
            return ".jpg" if extension == ".jpeg" else extension
    return default


ELEMENT_NAME_CHARS = 32
"""Longest element name kept in a file name (the layout reserves room for result names)."""


def element_file_name(index: int, name: str | None) -> str:
    """`<Name>.png` for named elements (ParseFace parts), else `element-<i>.png`."""
    if name:
        # re compiles (and caches) the pattern on first use: only named elements pay for it.
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:ELEMENT_NAME_CHARS]
        if safe:
            return f"{safe}.png"
    return f"element-{index}.png"


def plan_files(result: SegmentResult, params: Mapping[str, str]) -> list[OutputFile]:
    """The files a synchronous (or image) result yields, with their names in the result folder."""
    files: list[OutputFile] = []
    wants_mask = str(params.get("ReturnForm", "")).lower() == "mask"
    if result.image_url:
        files.append(
            OutputFile(
                "mask" if wants_mask else "cutout",
                result.image_url,
                "mask.png" if wants_mask else "cutout.png",
            )
        )
    if result.mask_url:
        files.append(OutputFile("mask", result.mask_url, "mask.png"))
    if result.origin_image_url:
        files.append(OutputFile("origin", result.origin_image_url, "origin.png"))
    if result.video_url:
        files.append(OutputFile("video", result.video_url, video_file_name(result.action, result.video_url)))
    used: set[str] = {f.name for f in files}
    for index, element in enumerate(result.elements):
        if element.image_url:
            name = element_file_name(index, element.name)
            if name in used:  # two elements with one name must not overwrite each other
                name = f"{name[:-4]}-{index}.png"
            used.add(name)
            files.append(OutputFile("element", element.image_url, name, index))
        if element.origin_image_url:
            files.append(OutputFile("origin", element.origin_image_url, f"element-{index}-origin.png", index))
    return files


def video_file_name(action: str, url: str) -> str:
    """Body/half-body jobs return a mask video; green-screen returns the keyed video."""
    stem = "result" if action == "SegmentGreenScreenVideo" else "mask"
    return f"{stem}{url_extension(url, '.mp4')}"


# -- downloading -------------------------------------------------------------------------------------


class Downloads:
    """How result downloads are bounded: a socket timeout, and the invocation's deadline minus a margin
    (a copy that would run past it is abandoned with `DeadlineError`, leaving nothing half-written)."""

    __slots__ = ("deadline", "margin", "timeout")

    def __init__(self, timeout: float = 60.0, deadline: Deadline | None = None, margin: float = 0.0) -> None:
        self.timeout = timeout
        self.deadline = deadline
        self.margin = margin

    def socket_timeout(self) -> float:
        if self.deadline is None:
            return self.timeout
        return max(0.5, min(self.timeout, self.deadline.remaining() - self.margin))

    def check(self, url: str) -> None:
        if self.deadline is not None and not self.deadline.has(self.margin):
            host = urlsplit(url).hostname or "the result host"
            raise DeadlineError(f"download from {host} abandoned: the invocation is about to time out")


def open_download(
    session: requests.Session, url: str, *, limits: Downloads | None = None
) -> requests.Response:
    """GET a result URL for streaming; `ResultDownloadError` (http_status set) when it is not there."""
    limits = limits or Downloads()
    limits.check(url)
    timeout = limits.socket_timeout()
    try:
        response = session.get(url, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise ResultDownloadError(f"result download failed: {type(exc).__name__}") from exc
    if response.status_code != 200:
        status = response.status_code
        response.close()
        code = "ResultExpired" if status in EXPIRED_STATUSES else "ResultDownloadFailed"
        raise ResultDownloadError(f"result URL answered HTTP {status}", code=code, http_status=status)
    return response


def _chunks(response: requests.Response, limits: Downloads) -> Iterator[bytes]:
    try:
        for chunk in response.iter_content(DOWNLOAD_CHUNK):
            limits.check(response.url)
            if chunk:
                yield chunk
    except requests.RequestException as exc:
        raise ResultDownloadError(f"result download broke: {type(exc).__name__}") from exc
    finally:
        response.close()


def stream_to_storage(
    session: requests.Session, url: str, storage: Storage, key: str, *, limits: Downloads | None = None
) -> str:
    """Copy a result URL into `key` chunk by chunk (multipart when large); returns the ETag."""
    limits = limits or Downloads()
    response = open_download(session, url, limits=limits)
    return storage.put_stream(key, _chunks(response, limits), content_type=content_type_for(key))


def download_bytes(
    session: requests.Session, url: str, *, limits: Downloads | None = None, limit: int = 64 * 1024 * 1024
) -> bytes:
    """A small result (an image to rescale) in memory, refusing anything above `limit`."""
    limits = limits or Downloads()
    response = open_download(session, url, limits=limits)
    parts: list[bytes] = []
    total = 0
    for chunk in _chunks(response, limits):
        total += len(chunk)
        if total > limit:
            response.close()
            raise ResultDownloadError(f"result larger than {limit} bytes", code="ResultTooLarge")
        parts.append(chunk)
    return b"".join(parts)


def is_expired(error: SegflowError) -> bool:
    return isinstance(error, ResultDownloadError) and error.http_status in EXPIRED_STATUSES


# -- manifest and failure records ----------------------------------------------------------------------


def build_manifest(
    record: JobRecord,
    *,
    request_id: str | None,
    files: Sequence[Mapping[str, Any]],
    elements: Sequence[Mapping[str, Any]],
    completed_at: float,
    rule: str | None = None,
) -> dict[str, Any]:
    return {
        "Action": record.action,
        "Params": dict(record.params),
        "RequestId": request_id,
        "JobId": record.payload.job_id,
        "Source": {"Bucket": record.bucket, "Key": record.key, "ETag": record.etag, "Size": record.size},
        "SubmittedKey": record.payload.submit_key,
        "Fit": dict(record.payload.fit) if record.payload.fit else None,
        "Rule": rule,
        "CreatedAt": iso_time(record.created_at),
        "SubmittedAt": iso_time(record.payload.submitted_at) if record.payload.submitted_at else None,
        "CompletedAt": iso_time(completed_at),
        "Files": list(files),
        "Elements": list(elements),
    }


def write_json(storage: Storage, key: str, document: Mapping[str, Any]) -> str:
    body = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True).encode("utf-8")
    return storage.put_bytes(key, body, content_type="application/json")


def failure_document(
    *,
    bucket: str,
    key: str,
    etag: str | None,
    action: str | None,
    error: SegflowError,
    at: float | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """The failure record `<failed>/<source key>.json`: what failed, with the service's code and ids.
    `message` replaces the error's own (callers pass it scrubbed of secrets)."""
    when = time.time() if at is None else at
    return {
        "Bucket": bucket,
        "Key": key,
        "ETag": etag,
        "Action": action,
        "Code": error.code,
        "Message": error.message if message is None else message,
        "HttpStatus": error.http_status,
        "RequestId": error.request_id,
        "Time": iso_time(when),
    }


# -- storing a whole result -----------------------------------------------------------------------------


class StoredResult(Value):
    """The keys written for one result; the manifest is written last, so its presence means complete."""

    keys: tuple[str, ...]
    manifest_key: str
    manifest: Mapping[str, Any]


def store_result(
    storage: Storage,
    session: requests.Session,
    layout: BucketLayout,
    record: JobRecord,
    result: SegmentResult,
    *,
    completed_at: float,
    limits: Downloads | None = None,
    rule: str | None = None,
) -> StoredResult:
    """Copy every result file under `<output>/<source key>/<action>/`, then write `manifest.json`.

    With a fitted copy (`record.fit`), image results are scaled back and applied to the original so the
    stored files have the original's size and element boxes are in the original's coordinates.
    """
    copier = _ResultCopier(storage, session, record, result, limits or Downloads())
    prefix = layout.result_prefix(record.key, record.action)
    files = [copier.copy(item, prefix + item.name) for item in plan_files(result, record.params)]
    manifest = build_manifest(
        record,
        request_id=result.request_id or record.payload.request_id,
        files=files,
        elements=copier.element_entries(files),
        completed_at=completed_at,
        rule=rule,
    )
    manifest_key = layout.manifest_key(record.key, record.action)
    write_json(storage, manifest_key, manifest)
    keys = tuple(str(entry["Key"]) for entry in files)
    return StoredResult(keys=(*keys, manifest_key), manifest_key=manifest_key, manifest=manifest)


class _ResultCopier:
    """Copies one result's files; with a fitted copy, restores image results to the original's size."""

    def __init__(
        self,
        storage: Storage,
        session: requests.Session,
        record: JobRecord,
        result: SegmentResult,
        limits: Downloads,
    ) -> None:
        self.storage = storage
        self.session = session
        self.record = record
        self.result = result
        self.limits = limits
        self.fit = record.payload.fit
        # Pillow and the original are only needed to restore the results of a fitted copy.
        self.original = storage.get_bytes(record.key) if self.fit else None

    def copy(self, item: OutputFile, dest: str) -> dict[str, Any]:
        restored = self._restored(item)
        if restored is not None:
            self.storage.put_bytes(dest, restored, content_type="image/png")
        else:
            stream_to_storage(self.session, item.url, self.storage, dest, limits=self.limits)
        entry: dict[str, Any] = {"File": item.name, "Role": item.role, "Key": dest}
        if item.element_index is not None:
            entry["Element"] = item.element_index
        return entry

    def _restored(self, item: OutputFile) -> bytes | None:
        """The file restored to the original's size, or None when it is stored as the service made it."""
        if self.original is None or self.fit is None:
            return None
        from segflow import imagefit  # only for results of a fitted copy (and Pillow with it)

        if item.role in ("cutout", "mask"):
            data = download_bytes(self.session, item.url, limits=self.limits)
            return imagefit.restore_full_size(self.original, data, as_mask=item.role == "mask")
        if item.role == "element" and item.element_index is not None:
            box = _box_of(self.result.elements[item.element_index])
            if box is None:
                return None
            data = download_bytes(self.session, item.url, limits=self.limits)
            as_mask = str(self.record.params.get("ReturnForm", "")).lower() == "mask"
            return imagefit.restore_element(
                self.original, data, imagefit.scale_box(box, self.fit), as_mask=as_mask
            )
        return None

    def element_entries(self, files: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """One manifest entry per element: its box (in the original's coordinates) and its file."""
        names = {entry["Element"]: entry["File"] for entry in files if entry["Role"] == "element"}
        entries: list[dict[str, Any]] = []
        for index, element in enumerate(self.result.elements):
            box = _box_of(element)
            if box is not None and self.fit is not None:
                from segflow import imagefit

                box = imagefit.scale_box(box, self.fit)
            x, y, w, h = box if box is not None else (element.x, element.y, element.width, element.height)
            entries.append(
                {
                    "Index": index,
                    "X": x,
                    "Y": y,
                    "Width": w,
                    "Height": h,
                    "Name": element.name,
                    "File": names.get(index),
                }
            )
        return entries


def _box_of(element: Element) -> tuple[int, int, int, int] | None:
    x, y, w, h = element.x, element.y, element.width, element.height
    if x is None or y is None or w is None or h is None:
        return None
    return x, y, w, h
