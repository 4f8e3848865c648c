"""How the engine answers RPC calls: the service's JSON and XML shapes, for success and for errors.

Success: `{"RequestId": ..., "Data": {...}}`, or with `Format=XML`
`<ActionResponse><RequestId/><Data/></...>`.
Errors: `{"RequestId", "HostId", "Code", "Message"}` with the documented HTTP status, or `<Error>` in XML.
JSON is the default: the official v3 clients send no `Format` and parse JSON; the error content type for XML
is exactly `text/xml;charset=utf-8` because that is what the official clients test for.

Choices where the service's behaviour is not documented (recorded here so the tests can pin them):
- an unknown action, or an action asked for with the other product's `Version`, answers
  `UnsupportedOperation` with HTTP 400 (the status `segflow.errors.UnknownActionError` carries);
- lists inside `Data` are rendered in XML as one repeated element per item (`<Elements>…</Elements>` twice),
  the way the RPC gateway renders arrays that have no wrapper object.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from segflow.errors import SegflowError

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
XML_CONTENT_TYPE = "text/xml;charset=utf-8"
XML_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>"


@dataclass(frozen=True)
class HttpAnswer:
    """A rendered answer: what the server writes back."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # beyond Content-Type and Content-Length


@dataclass(frozen=True)
class RpcFailure:
    """An error as the service reports it."""

    code: str
    message: str
    http_status: int = 400

    @classmethod
    def from_error(cls, error: SegflowError) -> RpcFailure:
        return cls(code=error.code, message=error.message, http_status=error.http_status or 500)


def new_request_id() -> str:
    """A RequestId in the service's style (upper-case UUID); it doubles as the JobId of async calls."""
    return str(uuid.uuid4()).upper()


def wants_xml(params: Mapping[str, str]) -> bool:
    """`Format=XML` (any case) asks for XML; anything else, or nothing, gets JSON."""
    return params.get("Format", "").strip().upper() == "XML"


def render_success(action: str, request_id: str, data: Mapping[str, Any], *, xml: bool) -> HttpAnswer:
    if xml:
        inner = _xml_element("RequestId", request_id) + _xml_element("Data", data)
        text = f"{XML_DECLARATION}<{action}Response>{inner}</{action}Response>"
        return HttpAnswer(200, XML_CONTENT_TYPE, text.encode("utf-8"))
    body = {"RequestId": request_id, "Data": dict(data)}
    return HttpAnswer(200, JSON_CONTENT_TYPE, _json_bytes(body))


def render_error(failure: RpcFailure, request_id: str, host_id: str, *, xml: bool) -> HttpAnswer:
    fields = {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": failure.code,
        "Message": failure.message,
    }
    if xml:
        inner = "".join(_xml_element(name, value) for name, value in fields.items())
        text = f"{XML_DECLARATION}<Error>{inner}</Error>"
        return HttpAnswer(failure.http_status, XML_CONTENT_TYPE, text.encode("utf-8"))
    return HttpAnswer(failure.http_status, JSON_CONTENT_TYPE, _json_bytes(fields))


def render_json(status: int, body: Mapping[str, Any]) -> HttpAnswer:
    """A plain JSON answer (PicWish speaks its own envelope)."""
    return HttpAnswer(status, JSON_CONTENT_TYPE, _json_bytes(dict(body)))


def _json_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _xml_element(name: str, value: Any) -> str:
    if isinstance(value, list | tuple):
        return "".join(_xml_element(name, item) for item in value)
    if isinstance(value, Mapping):
        inner = "".join(_xml_element(str(key), item) for key, item in value.items())
        return f"<{name}>{inner}</{name}>"
    if value is None:
        return f"<{name}/>"
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"<{name}>{escape(text)}</{name}>"
