"""Small loopback HTTP servers for the tests (stand-ins of services, file servers): the standard library's
threaded server on 127.0.0.1, on a background thread. For tests only: the product serves with waitress
(`segflow_engine.wsgiserver`), and nothing here imports the engine, so the layer's tests run on FC's
Python with its built-in packages alone.

    with LoopbackServer(Handler) as server:      # Handler: a BaseHTTPRequestHandler subclass
        server.base_url, server.port
"""

from __future__ import annotations

import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

LOG = logging.getLogger("tests.loopback_http")
S = TypeVar("S", bound="LoopbackServer")


def client_went_away(exc: BaseException | None) -> bool:
    """A reset, a broken pipe or a timeout: the client's doing, not worth a traceback."""
    return isinstance(exc, ConnectionError | TimeoutError)


class ReplyingHandler(BaseHTTPRequestHandler):
    """A request handler with the two answers a test file server gives, and no access log on stderr."""

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    """The standard library's threaded server: a client that goes away (a download abandoned once it is
    known to be too large, a reset) costs one DEBUG line, not a traceback on stderr."""

    daemon_threads = True
    request_queue_size = 128  # the default of 5 resets bursts of clients

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if client_went_away(exc):
            LOG.debug("%s went away: %s", client_address, type(exc).__name__)
            return
        super().handle_error(request, client_address)


class LoopbackServer:
    """`handler_class` served on 127.0.0.1 (a free port) on a background thread until `close()`. A stand-in
    either holds one or is one (a subclass that passes its handler to `__init__` last)."""

    def __init__(self, handler_class: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = QuietThreadingHTTPServer(("127.0.0.1", 0), handler_class)
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
