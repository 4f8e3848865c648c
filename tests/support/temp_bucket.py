"""The engine's temporary bucket (`segflow_engine.tempstore.TempBucket`) on a loopback port of its own, so
the fake vision service of the services harness can grant and receive uploads exactly as the engine does
(the checks encode OSS's PostObject documentation; see that module).

    server = TempBucketServer.shared()          # one per test process, started on first use
    grant = server.bucket.grant("imageseg")     # what AuthorizeFileUpload answers (beside RequestId)
    server.posts                                # (status, code) of every PostObject received
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from segflow.results import parse_document
from segflow_engine.tempstore import TempBucket
from tests.support.loopback_http import LoopbackServer


class TempBucketServer:
    """Serves `POST /viapi-customer-temp/` (the form upload) and `GET /viapi-customer-temp/<key>`."""

    _shared: ClassVar[TempBucketServer | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: Path | None = None) -> None:
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="segflow-temp-bucket-")
        self.posts: list[tuple[int, str]] = []
        self.gets: list[str] = []
        self._failures: list[int] = []
        self._lock = threading.Lock()
        self._server = LoopbackServer(_handler(self))
        endpoint = f"127.0.0.1:{self._server.port}"
        self.bucket = TempBucket(Path(root or self._tmp.name), endpoint)  # type: ignore[union-attr]

    @classmethod
    def shared(cls) -> TempBucketServer:
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` uploads with `status` and OSS's `InternalError` (a transient fault)."""
        with self._lock:
            self._failures.extend([status] * count)

    def take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def record_post(self, status: int, body: bytes) -> None:
        code = ""
        if status >= 400:
            with contextlib.suppress(ValueError, SyntaxError):
                code = str(parse_document(body, "application/xml").get("Code") or "")
        with self._lock:
            self.posts.append((status, code))

    def close(self) -> None:
        self._server.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _handler(server: TempBucketServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            headers = {name.lower(): value for name, value in self.headers.items()}
            if not server.bucket.is_upload("POST", urlsplit(self.path).path):
                self._answer(405, b"", close=False)
                return
            failure = server.take_failure()
            if failure is not None:
                self.rfile.read(length)
                body = b"<Error><Code>InternalError</Code><Message>scripted</Message></Error>"
                server.record_post(failure, body)
                self._answer(failure, body, close=False)
                return
            answer, close = server.bucket.receive(headers, self.rfile, length)
            server.record_post(answer.status, answer.body)
            self._answer(answer.status, answer.body, close=close, content_type=answer.content_type)

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            with server._lock:
                server.gets.append(path)
            found = server.bucket.object_path(path)
            if found is None:
                self._answer(404, b"<Error><Code>NoSuchKey</Code></Error>", close=False)
                return
            self._answer(200, found.read_bytes(), close=False, content_type="application/octet-stream")

        def _answer(
            self, status: int, body: bytes, *, close: bool, content_type: str = "application/xml"
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(body)

    return Handler
