"""The wire side of `segflow_engine.httpd`: framing a request the reactor reads, the answers it gives without
a thread, and the `BaseHTTPRequestHandler` that answers a request read whole. Also the rule that a client
going away is no error (`client_went_away`), and `QuietThreadingHTTPServer` for the small loopback servers
(the local buckets' presigned URLs, test servers) that follow it."""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from segflow_engine.httpd import Connection

LOG = logging.getLogger("segflow_engine.httpd")


def client_went_away(exc: BaseException | None) -> bool:
    """A reset, a broken pipe or a timeout: the client's doing, not worth a traceback."""
    return isinstance(exc, ConnectionError | TimeoutError)


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    """The standard library's threaded server, for small loopback services: a client that goes away
    (a download abandoned once it is known to be too large, a reset) costs one DEBUG line, not a
    traceback on stderr; anything else is still reported."""

    daemon_threads = True
    request_queue_size = 128  # the default of 5 resets bursts of clients

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if client_went_away(exc):
            LOG.debug("%s went away: %s", client_address, type(exc).__name__)
            return
        super().handle_error(request, client_address)


class Refusal(Exception):
    """A request the reactor answers itself (too slow, too large, unframeable, overload), then closes."""

    def __init__(self, status: HTTPStatus, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def answer_bytes(refusal: Refusal, retry_after: int | None = None) -> bytes:
    body = json.dumps({"Code": refusal.code, "Message": refusal.message}).encode("utf-8")
    lines = [
        f"HTTP/1.1 {refusal.status.value} {refusal.status.phrase}",
        "Content-Type: application/json;charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if retry_after is not None:
        lines.append(f"Retry-After: {retry_after}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def head_end(buffer: bytearray) -> int:
    """Index just past the blank line ending the head, or -1 (bare LF line ends are accepted too)."""
    ends = [i + len(m) for m in (b"\r\n\r\n", b"\n\n") if (i := buffer.find(m)) >= 0]
    return min(ends) if ends else -1


def framing(head: bytes, max_body: int) -> tuple[int, bool]:
    """(Content-Length, whether the client waits for `100 Continue`); refuses what cannot be framed."""
    lengths: set[bytes] = set()
    expect_continue = False
    for raw in head.split(b"\n")[1:]:
        name, colon, value = raw.rstrip(b"\r").partition(b":")
        name = name.lower()
        if not colon:
            continue
        if name == b"content-length":
            lengths.add(value.strip())
        elif name == b"transfer-encoding":
            raise Refusal(HTTPStatus.LENGTH_REQUIRED, "LengthRequired", "send the body with Content-Length")
        elif name == b"expect":
            expect_continue = value.strip().lower() == b"100-continue"
    if len(lengths) > 1 or not all(v.isdigit() for v in lengths):
        raise Refusal(HTTPStatus.BAD_REQUEST, "BadRequest", "invalid Content-Length")
    length = int(lengths.pop()) if lengths else 0
    if length > max_body:
        raise Refusal(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "RequestEntityTooLarge",
            f"the request body is {length} bytes; at most {max_body} are accepted",
        )
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    return length, expect_continue and first_line.endswith(b"HTTP/1.1")


class BufferedRequestHandler(BaseHTTPRequestHandler):
    """A `BaseHTTPRequestHandler` answering one request the reactor has read whole: the head is its
    `rfile`, the body is `request_body` (never read from the socket: its length was checked already)."""

    protocol_version = "HTTP/1.1"
    request: Connection

    def setup(self) -> None:
        self.connection = self.request.sock
        self.rfile = io.BytesIO(self.request.head)
        self.wfile = SocketWriter(self.request.sock)
        self.request_body = self.request.body

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        """The socket stays open: the server keeps it for the next request or closes it."""

    def handle_expect_100(self) -> bool:
        return True  # the reactor said `100 Continue` before it read the body

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s: %s", self.address_string(), format % args)


class SocketWriter(io.BufferedIOBase):
    """`wfile`: every write goes out whole (the socket's timeout bounds each write)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._sock.sendall(data)
        with memoryview(data) as view:
            return view.nbytes
