"""Typed results of the vision APIs, and the parsing of their JSON and XML answers.

The answers are read once, here, so the spellings the documents disagree on stay in one place:
SegmentFurniture's `ImageUrl`, `VideoUrl` vs `VideoURL`, GetAsyncJobResult's `Result` being a JSON
string, XML answers where a one-element list looks like an object and every number is text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from segflow.errors import ApiError, JobFailedError
from segflow.values import Value

# GetAsyncJobResult `Status` values.
QUEUING = "QUEUING"
PROCESSING = "PROCESSING"
PROCESS_SUCCESS = "PROCESS_SUCCESS"
FAILED_STATUSES = frozenset({"PROCESS_FAILED", "TIMEOUT_FAILED", "LIMIT_RETRY_FAILED"})
PENDING_STATUSES = frozenset({QUEUING, PROCESSING})

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class Element(Value):
    """One entry of `Data.Elements`: a face, a head, a ParseFace part, a vehicle, a refined mask."""

    image_url: str | None = None
    x: int | None = None
    y: int | None = None
    width: int | None = None
    height: int | None = None
    name: str | None = None
    origin_image_url: str | None = None


class SegmentResult(Value):
    """What a segmentation call gave back. `job_id` is set for asynchronous submissions.

    `raw` (the answer's whole `Data`) is left out of equality, hashing and repr: the same results are the
    same result whatever else the answer carried, and `Data` can be long.
    """

    action: str
    request_id: str
    image_url: str | None = None
    origin_image_url: str | None = None
    elements: tuple[Element, ...] = ()
    job_id: str | None = None
    mask_url: str | None = None
    video_url: str | None = None
    raw: Mapping[str, Any] = _EMPTY  # read-only, so one shared empty default is safe

    def _key(self) -> tuple[Any, ...]:
        return self._values()[:-1]

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={value!r}" for name, value in zip(self._fields, self._key(), strict=False))
        return f"{type(self).__name__}({shown})"

    @property
    def is_async(self) -> bool:
        return self.job_id is not None

    def output_urls(self) -> tuple[str, ...]:
        """Every result URL in the answer, in order (top level first, then the elements)."""
        urls = [self.image_url, self.mask_url, self.video_url]
        urls += [element.image_url for element in self.elements]
        return tuple(url for url in urls if url)


class AsyncJobResult(Value):
    """`GetAsyncJobResult.Data`, with `Result` decoded from its JSON string."""

    job_id: str
    status: str
    result: Mapping[str, Any] | None
    error_code: str | None
    error_message: str | None
    request_id: str

    @property
    def is_pending(self) -> bool:
        return self.status in PENDING_STATUSES

    @property
    def succeeded(self) -> bool:
        return self.status == PROCESS_SUCCESS

    @property
    def failed(self) -> bool:
        return self.status in FAILED_STATUSES

    def result_url(self) -> str | None:
        """The output URL: videoseg writes `VideoUrl` or `VideoURL`, async SegmentBody `ImageURL`."""
        if not self.result:
            return None
        for key in ("VideoUrl", "VideoURL", "ImageURL", "ImageUrl"):
            value = self.result.get(key)
            if isinstance(value, str) and value:
                return value
        return None

    def raise_for_failure(self) -> None:
        """Raise `JobFailedError` carrying the job's own error code when the job ended badly."""
        if self.failed:
            raise JobFailedError(
                f"job {self.job_id} ended {self.status}: {self.error_message or 'no message'}",
                code=self.error_code or self.status,
                request_id=self.request_id,
            )


# --- answer documents -------------------------------------------------------------------------------


def parse_document(body: bytes, content_type: str = "") -> dict[str, Any]:
    """Decode an answer body as JSON or XML (by content type, else by its first byte).

    XML `<XxxResponse>` / `<Error>` roots are dropped so both shapes look like the JSON answer.
    Raises ValueError when the body is neither.
    """
    text = body.lstrip()
    if not text:
        return {}
    if "xml" in content_type.lower() or text[:1] == b"<":
        return _parse_xml(text)
    decoded = json.loads(text.decode("utf-8"))
    if not isinstance(decoded, dict):
        raise ValueError("answer is not a JSON object")
    return decoded


def _parse_xml(body: bytes) -> dict[str, Any]:
    # Answers never carry a DTD; refusing one rules out entity expansion tricks.
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValueError("XML answer with a DTD refused")
    from xml.etree import ElementTree  # the JSON path never pays for it

    root = ElementTree.fromstring(body)
    value = _xml_value(root)
    return value if isinstance(value, dict) else {}


def _xml_value(node: Any) -> Any:
    children = list(node)
    if not children:
        return (node.text or "").strip()
    result: dict[str, Any] = {}
    for child in children:
        tag = child.tag.rsplit("}", 1)[-1]
        value = _xml_value(child)
        if tag in result:
            existing = result[tag]
            if isinstance(existing, list):
                existing.append(value)
            else:
                result[tag] = [existing, value]
        else:
            result[tag] = value
    return result


def error_from_document(document: Mapping[str, Any], http_status: int | None) -> ApiError:
    """An `ApiError` from an error answer (`{"RequestId","HostId","Code","Message"}`, JSON or XML)."""
    code = _str(document.get("Code") or document.get("code"))
    message = _str(document.get("Message") or document.get("message"))
    return ApiError(
        message or "the service gave no message",
        code=code or _code_for_status(http_status),
        http_status=http_status,
        request_id=_str(document.get("RequestId") or document.get("requestId")),
        host_id=_str(document.get("HostId") or document.get("hostId")),
    )


def _code_for_status(status: int | None) -> str:
    if status is not None and status >= 500:
        return "InternalError"
    if status == 429:
        return "Throttling"
    return "InvalidResponse"


def data_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """`Data` of a success answer; an empty dict when the answer carries none (async submissions)."""
    data = document.get("Data")
    return dict(data) if isinstance(data, Mapping) else {}


# --- typed results ---------------------------------------------------------------------------------


def segment_result(
    action: str, request_id: str, data: Mapping[str, Any], *, is_async: bool = False
) -> SegmentResult:
    """A `SegmentResult` from the `Data` of any imageseg/videoseg segmentation action.

    For an asynchronous submission the job id is `Data.JobId` when the answer has one, else the
    RequestId (videoseg documents the RequestId as the JobId).
    """
    job_id = (_str(data.get("JobId")) or request_id) if is_async else None
    elements = tuple(_element(item) for item in as_list(data.get("Elements")) if isinstance(item, Mapping))
    return SegmentResult(
        action=action,
        request_id=request_id,
        image_url=_str(data.get("ImageURL") or data.get("ImageUrl")),
        origin_image_url=_str(data.get("OriginImageURL")),
        elements=elements,
        job_id=job_id,
        video_url=_str(data.get("VideoUrl") or data.get("VideoURL")),
        raw=dict(data),
    )


def _element(item: Mapping[str, Any]) -> Element:
    return Element(
        # SegmentFurniture spells it `ImageUrl`.
        image_url=_str(item.get("ImageURL") or item.get("ImageUrl")),
        x=_int(item.get("X")),
        y=_int(item.get("Y")),
        width=_int(item.get("Width")),
        height=_int(item.get("Height")),
        name=_str(item.get("Name")),
        origin_image_url=_str(item.get("OriginImageURL")),
    )


def async_job_result(request_id: str, data: Mapping[str, Any], *, job_id: str = "") -> AsyncJobResult:
    """An `AsyncJobResult` from `GetAsyncJobResult.Data`; a malformed `Result` is kept as `{"raw": …}`."""
    return AsyncJobResult(
        job_id=_str(data.get("JobId")) or job_id,
        status=_str(data.get("Status")) or "",
        result=_decode_result(data.get("Result")),
        error_code=_str(data.get("ErrorCode")),
        error_message=_str(data.get("ErrorMessage")),
        request_id=request_id,
    )


def _decode_result(value: Any) -> Mapping[str, Any] | None:
    if value is None or value == "":
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return {"raw": value}
        if isinstance(decoded, dict):
            return decoded
        return {"raw": decoded}
    return {"raw": value}


# --- small readers -----------------------------------------------------------------------------------


def as_list(value: Any) -> list[Any]:
    """A list from a JSON list, an XML repeated tag (list), a single XML item (dict) or nothing.

    XML may also wrap items one level deeper (`<Elements><Element>…</Element></Elements>`).
    """
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    if isinstance(value, Mapping) and len(value) == 1:
        (inner,) = value.values()
        if isinstance(inner, list) or (isinstance(inner, Mapping) and inner):
            return as_list(inner) if isinstance(inner, list) else [inner]
    return [value]


def _str(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text or None


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
