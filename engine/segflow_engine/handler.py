"""The engine's HTTP side: a request read by the bounded server (`segflow_engine.httpd`) becomes a
`Request`, the application answers it (`segflow_engine.server.Engine.handle`), the answer is written back.
The application also says which routes stream their body (`Application.streams`): their `Request` carries
a `stream` to read instead of a `body`.

No query string is ever logged: they hold signatures and AccessKeyIds.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeAlias
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

from segflow_engine.httpd import BoundedHTTPServer
from segflow_engine.httpwire import BodyStream, BufferedRequestHandler
from segflow_engine.limits import ServerLimits
from segflow_engine.protocol import HttpAnswer

LOG = logging.getLogger("segflow_engine.server")


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # without the query
    query: dict[str, str]
    headers: dict[str, str]  # names in lower case
    body: bytes
    stream: BodyStream | None = None  # a streamed route's body, read as it arrives (then `body` is empty)

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
        """Whether requests to this route get their body as a `Request.stream` (read by the handler as it
        arrives) rather than read whole into memory first."""
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


class EngineHttpServer(BoundedHTTPServer):
    """The bounded server and the application it hands requests to (set once the port is known and the
    application built, before serving)."""

    app: Application

    def __init__(self, address: tuple[str, int], limits: ServerLimits) -> None:
        super().__init__(address, EngineHandler, limits)

    def streams(self, method: str, path: str) -> bool:
        return self.app.streams(method, path)


class EngineHandler(BufferedRequestHandler):
    server: EngineHttpServer  # type: ignore[assignment]
    server_version = "segflow-engine/0.1"

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self, head: bool = False) -> None:
        split = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=split.path or "/",
            query=dict(parse_qsl(split.query, keep_blank_values=True)),
            headers={name.lower(): value for name, value in self.headers.items()},
            body=self.request_body,
            stream=self.request_stream,
        )
        answer = self.server.app.handle(request)
        if isinstance(answer, FileAnswer):
            self._write_file(answer, head=head)
        else:
            self._write(answer, head=head)

    def _write(self, answer: HttpAnswer, *, head: bool = False) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if answer.status == 401:
            self.send_header("X-Ca-Error-Message", "Invalid AppCode")
        if self.request_stream is not None and self.request_stream.remaining > 0:
            # The body was refused before its end: this connection carries no further request.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head:
            self.wfile.write(answer.body)

    def _write_file(self, answer: FileAnswer, *, head: bool) -> None:
        try:
            handle = answer.path.open("rb")
        except FileNotFoundError:
            self._write(oss_error(404, "NoSuchKey", "no such result"), head=head)
            return
        with handle:
            size = answer.path.stat().st_size
            self.send_response(200)
            self.send_header("Content-Type", answer.content_type)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if not head:
                shutil.copyfileobj(handle, self.wfile, 256 * 1024)

    def log_message(self, format: str, *args: Any) -> None:
        path = urlsplit(self.path).path if hasattr(self, "path") else ""
        LOG.debug("%s %s -> %s", getattr(self, "command", ""), path, args[1] if len(args) > 1 else "")
