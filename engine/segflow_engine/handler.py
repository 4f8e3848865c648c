"""The engine's HTTP side as WSGI: an environ becomes a `Request`, the application's `Answer` the response.

The server (waitress, `segflow_engine.wsgiserver`) has received each request whole before the application
sees it; a body beyond `ServerLimits.spool_bytes` waits in a temporary file. The application says which
routes take their body as a stream (`Application.streams`: the temporary bucket's uploads, up to 1 GiB);
every other body is an API call's, read into memory, and refused `413` beyond `max_call_body_bytes`.

No query string is ever logged: they hold signatures and AccessKeyIds.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeAlias
from urllib.parse import parse_qsl, quote, urlsplit
from xml.sax.saxutils import escape

from segflow_engine.protocol import HttpAnswer, render_json

LOG = logging.getLogger("segflow_engine.server")

FILE_BLOCK = 256 * 1024
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query, percent-encoded as sent (signatures cover it so)
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes = b""
    stream: BinaryIO | None = None  # a streamed route's body (then `body` is empty)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)


@dataclass(frozen=True)
class FileAnswer:
    path: Path
    content_type: str


Answer: TypeAlias = HttpAnswer | FileAnswer


class Application(Protocol):
    def handle(self, request: Request) -> Answer: ...

    def streams(self, method: str, path: str) -> bool:
        """Whether requests to this route get their body as `Request.stream` rather than read whole."""
        ...


def oss_error(status: int, code: str, message: str, host_id: str = "") -> HttpAnswer:
    """An error of what stands in for OSS (result files, the temporary bucket), in OSS's XML shape: Code,
    Message, a RequestId, and the HostId when there is one."""
    host = f"<HostId>{escape(host_id)}</HostId>" if host_id else ""
    text = (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
        f"<RequestId>{uuid.uuid4().hex.upper()[:24]}</RequestId>{host}</Error>"
    )
    return HttpAnswer(status, "application/xml", text.encode("utf-8"))


def serve_wsgi(
    app: Application, environ: dict[str, Any], start_response: StartResponse, max_call_body: int
) -> Iterable[bytes]:
    """One WSGI call of `app`: its request read from `environ`, its answer given to `start_response`."""
    request = read_request(environ, app.streams, max_call_body)
    answer = request if isinstance(request, HttpAnswer) else app.handle(request)
    return respond(answer, environ, start_response)


def read_request(
    environ: dict[str, Any], streams: Callable[[str, str], bool], max_call_body: int
) -> Request | HttpAnswer:
    """The request of `environ`, or the `413` of an API call's body over `max_call_body` bytes."""
    method = str(environ.get("REQUEST_METHOD", "GET")).upper()
    path = _raw_path(environ)
    headers = {
        name[5:].replace("_", "-").lower(): str(value)
        for name, value in environ.items()
        if name.startswith("HTTP_")
    }
    for name in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(name):
            headers[name.replace("_", "-").lower()] = str(environ[name])
    query = dict(parse_qsl(str(environ.get("QUERY_STRING", "")), keep_blank_values=True))
    body_input: BinaryIO = environ["wsgi.input"]
    if streams(method, path):
        return Request(method, path, query, headers, stream=body_input)
    length = int(headers.get("content-length") or 0)
    if length > max_call_body:
        message = f"the request body is {length} bytes; at most {max_call_body} are accepted"
        return render_json(413, {"Code": "RequestEntityTooLarge", "Message": message})
    return Request(method, path, query, headers, body=body_input.read(length) if length else b"")


def _raw_path(environ: dict[str, Any]) -> str:
    """The path as the client sent it: waitress gives the request line's target (`REQUEST_URI`); another
    server (or a test's environ) only the decoded `PATH_INFO`, encoded again here."""
    target = environ.get("REQUEST_URI") or environ.get("RAW_URI")
    if target:
        return urlsplit(str(target)).path or "/"
    decoded = str(environ.get("SCRIPT_NAME", "")) + str(environ.get("PATH_INFO", ""))
    return quote(decoded.encode("latin-1"), safe="/:@!$&'()*+,;=-._~") or "/"


def respond(answer: Answer, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    head = environ.get("REQUEST_METHOD") == "HEAD"
    if isinstance(answer, FileAnswer):
        try:
            handle = answer.path.open("rb")
        except FileNotFoundError:  # expired and removed since it was resolved
            answer = oss_error(404, "NoSuchKey", "no such result")
        else:
            return _file_response(handle, answer.content_type, environ, start_response, head=head)
    headers = [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body)))]
    headers += answer.headers
    if answer.status == 401 and not any(name == "X-Ca-Error-Message" for name, _ in answer.headers):
        headers.append(("X-Ca-Error-Message", "Invalid AppCode"))
    start_response(_status_line(answer.status), headers)
    return [] if head else [answer.body]


def _file_response(
    handle: BinaryIO, content_type: str, environ: dict[str, Any], start_response: StartResponse, *, head: bool
) -> Iterable[bytes]:
    """A file, sent by the server's I/O thread (`wsgi.file_wrapper`) so no thread waits on the client."""
    size = os.fstat(handle.fileno()).st_size
    start_response(_status_line(200), [("Content-Type", content_type), ("Content-Length", str(size))])
    if head:
        handle.close()
        return []
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        wrapped: Iterable[bytes] = wrapper(handle, FILE_BLOCK)
        return wrapped
    return _blocks(handle)


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(FILE_BLOCK):
            yield block


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"
