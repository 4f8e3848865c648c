"""The wire side of `segflow_engine.httpd`: framing a request the reactor reads, the answers it gives without
a thread, the `BaseHTTPRequestHandler` that answers a request read whole, and the `BodyStream` a streamed
route reads its body from. Also the rule that a client
going away is no error (`client_went_away`), and `QuietThreadingHTTPServer` for the small loopback servers
(the local buckets' presigned URLs, test servers) that follow it."""

from __future__ import annotations

import io
import json
import logging
import socket
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from segflow_engine.httpd import Connection

LOG = logging.getLogger("segflow_engine.httpd")
STREAM_BLOCK = 256 * 1024  # the most a streamed body's read takes from the socket at once


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


def request_target(head: bytes) -> tuple[str, str]:
    """(method, path without the query) of a request head, the path as the handler will see it; empty
    strings when the line is malformed (the handler answers that)."""
    parts = head.split(b"\n", 1)[0].rstrip(b"\r").split(b" ")
    if len(parts) != 3:
        return "", ""
    return parts[0].decode("latin-1"), urlsplit(parts[1].decode("latin-1")).path or "/"


def framing(head: bytes, max_body: int | None) -> tuple[int, bool]:
    """(Content-Length, whether the client waits for `100 Continue`); refuses what cannot be framed, and a
    body over `max_body` (None: a streamed body, whose limit the application applies)."""
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
    if max_body is not None and length > max_body:
        raise Refusal(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            "RequestEntityTooLarge",
            f"the request body is {length} bytes; at most {max_body} are accepted",
        )
    first_line = head.split(b"\n", 1)[0].rstrip(b"\r")
    return length, expect_continue and first_line.endswith(b"HTTP/1.1")


class StreamTimeout(TimeoutError):
    """A streamed body went silent longer than its read timeout, or was not all there by its deadline."""


class BodyStream:
    """A request body read as it arrives, by the thread answering the request (a streamed route): first the
    bytes the reactor had already buffered, then the socket, never past the body's `length` (a pipelined
    request stays unread). Each read waits at most `read_timeout`, and all of them end by `deadline`
    (`time.monotonic`): past either, `StreamTimeout`. After a timeout or the client's end of input every
    read is empty. A client waiting for `100 Continue` is sent it by the first read that needs the socket,
    so a body refused before it is read is never asked for."""

    def __init__(
        self,
        sock: socket.socket,
        prefix: bytes,
        length: int,
        *,
        read_timeout: float,
        deadline: float,
        expect_continue: bool = False,
    ) -> None:
        self._sock = sock
        self._prefix = prefix[:length]
        self._left = length - len(self._prefix)  # still in the socket
        self._read_timeout = read_timeout
        self._deadline = deadline
        self._expect_continue = expect_continue
        self._ended = False

    @property
    def remaining(self) -> int:
        """Bytes of the body not read: when more than 0 the connection cannot carry another request."""
        return len(self._prefix) + self._left

    def read(self, size: int = -1, /) -> bytes:
        if self._prefix:
            size = len(self._prefix) if size < 0 else size
            block, self._prefix = self._prefix[:size], self._prefix[size:]
            return block
        if self._left <= 0 or self._ended or size == 0:
            return b""
        block = self._receive(min(self._left, STREAM_BLOCK if size < 0 else size, STREAM_BLOCK))
        self._left -= len(block)
        return block

    def _receive(self, size: int) -> bytes:
        wait = min(self._read_timeout, self._deadline - time.monotonic())
        previous = self._sock.gettimeout()
        try:
            if wait <= 0:
                raise TimeoutError("past the body's deadline")
            self._sock.settimeout(wait)
            if self._expect_continue:
                self._expect_continue = False
                self._sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            block = self._sock.recv(size)
        except TimeoutError:  # a socket's timeout is a TimeoutError (Python 3.10+)
            self._ended = True
            raise StreamTimeout("the request body stopped arriving in time") from None
        finally:
            self._sock.settimeout(previous)  # the answer's writes keep their own timeout
        self._ended = not block
        return block


class BufferedRequestHandler(BaseHTTPRequestHandler):
    """A `BaseHTTPRequestHandler` answering one request the reactor has read: the head is its `rfile`, the
    body is `request_body` (never read from the socket: its length was checked already) or, on a streamed
    route, `request_stream` (a `BodyStream`; then `request_body` is empty)."""

    protocol_version = "HTTP/1.1"
    request: Connection

    def setup(self) -> None:
        self.connection = self.request.sock
        self.rfile = io.BytesIO(self.request.head)
        self.wfile = SocketWriter(self.request.sock)
        self.request_stream = self.request.stream
        self.request_body = b"" if self.request_stream is not None else self.request.body

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def finish(self) -> None:
        """The socket stays open: the server keeps it for the next request or closes it."""

    def handle_expect_100(self) -> bool:
        return True  # the reactor said `100 Continue` before it read the body (a `BodyStream` says it itself)

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
