"""Presigned GET URLs for local buckets: an HMAC-signed, expiring loopback URL per object.

`LocalPresignServer` serves `http://127.0.0.1:<port>/<root-id>/<bucket>/<key>?Expires=<epoch>&Signature=<hmac>`
the way OSS serves a presigned URL: expired or tampered 403, missing 404, one `Range` honoured (206/416).
The signature is an HMAC-SHA256 over root id, bucket, key and expiry under the server's key, so a changed
path or expiry is refused (like OSS's `SignatureDoesNotMatch` / `AccessDenied`).

Running in the process that signs, it lives as long as that process: right for `segflow run` (which
waits for every job) and the tests. `segflow invoke` exits before queued jobs fetch their input, so it
signs through the background server of `segflow_cli.urlserver`, which is this class in its own process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import mimetypes
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import BinaryIO, ClassVar, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from segflow.errors import StorageError
from segflow_engine.httpwire import QuietThreadingHTTPServer

_COPY_CHUNK = 1024 * 1024
CONTROL_PREFIX = "/.segflow/"
"""Paths a subclass may answer itself (`control`); no object URL starts so (root ids never have a dot)."""


class Presigner(Protocol):
    """What `LocalDirStorage.presign_get` needs: a URL for one object of one bucket directory."""

    def presign(self, root: Path, bucket: str, key: str, expires_seconds: int) -> str: ...


class LocalPresignServer:
    """A loopback HTTP server for presigned GETs of local buckets (see the module docstring).

    `key` and `port` default to a fresh random key and a free port; the background server passes the
    ones of its predecessor so the URLs it signed stay valid across a restart."""

    _shared: ClassVar[LocalPresignServer | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        key: bytes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._key = key or secrets.token_bytes(32)
        self._roots: dict[str, Path] = {}
        self._root_ids: dict[Path, str] = {}
        self._lock = threading.Lock()
        self.last_activity = time.monotonic()
        self.in_flight = 0
        self._httpd = QuietThreadingHTTPServer((host, port), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="segflow-presign", daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> LocalPresignServer:
        """The process-wide server, started on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _root_id(self, root: Path) -> str:
        with self._lock:
            root_id = self._root_ids.get(root)
            if root_id is None:
                root_id = f"r{len(self._root_ids)}"
                self._root_ids[root] = root_id
                self._roots[root_id] = root
            return root_id

    def _sign(self, root_id: str, bucket: str, key: str, expires: int) -> str:
        message = f"{root_id}\n{bucket}\n{key}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def presign(self, root: Path, bucket: str, key: str, expires_seconds: int) -> str:
        return self.signed_url(root, bucket, key, int(self._clock()) + int(expires_seconds))

    def signed_url(self, root: Path, bucket: str, key: str, expires: int) -> str:
        """The URL of `key` valid through the epoch second `expires`."""
        root_id = self._root_id(root)
        signature = self._sign(root_id, bucket, key, expires)
        path = quote(f"{root_id}/{bucket}/{key}", safe="/")
        return f"{self.base_url}/{path}?Expires={expires}&Signature={signature}"

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Around every request: the background server stops only with none in flight, after a quiet spell."""
        with self._lock:
            self.in_flight += 1
            self.last_activity = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1
                self.last_activity = time.monotonic()

    def control(self, request: BaseHTTPRequestHandler) -> bool:
        """Answer a request under `CONTROL_PREFIX` (True when answered); this server has none."""
        return False

    def resolve(self, raw_path: str) -> tuple[int, Path | None]:
        """(HTTP status, file) for a request path with query: 200 and the file, or 403 / 404 / 400."""
        from segflow_cli.localbucket import LocalDirStorage  # the key rules live with the storage

        parts = urlsplit(raw_path)
        query = parse_qs(parts.query)
        segments = unquote(parts.path).lstrip("/").split("/", 2)
        if len(segments) != 3 or not query.get("Expires") or not query.get("Signature"):
            return 403, None
        root_id, bucket, key = segments
        try:
            expires = int(query["Expires"][0])
        except ValueError:
            return 403, None
        expected = self._sign(root_id, bucket, key, expires)
        if not hmac.compare_digest(expected, query["Signature"][0]) or self._clock() > expires:
            return 403, None
        root = self._roots.get(root_id)
        if root is None:
            return 403, None
        try:
            path = LocalDirStorage(root, bucket, presign_server=self).path_for(key)
        except StorageError:
            return 400, None
        if not path.is_file():
            return 404, None
        return 200, path


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) inclusive for a single `bytes=` range; None when it cannot be satisfied."""
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    if not match.group(1):
        suffix = int(match.group(2))
        if suffix == 0 or size == 0:
            return None
        return max(0, size - suffix), size - 1
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else size - 1
    if first >= size or last < first:
        return None
    return first, min(last, size - 1)


class PresignHandler(BaseHTTPRequestHandler):
    """Serves the signed object URLs of one `LocalPresignServer` (`presign`, set by `_make_handler`)."""

    protocol_version = "HTTP/1.1"
    presign: LocalPresignServer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: request lines would carry signatures into test output."""

    def _error(self, status: int) -> None:
        body = f"{status}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_POST(self) -> None:
        with self.presign.serving():
            if not (self.path.startswith(CONTROL_PREFIX) and self.presign.control(self)):
                self._error(405)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        with self.presign.serving():
            if not (self.path.startswith(CONTROL_PREFIX) and self.presign.control(self)):
                self._get_object()

    def _get_object(self) -> None:
        status, path = self.presign.resolve(self.path)
        if path is None:
            self._error(status)
            return
        try:
            # Held open while sent: a concurrent delete cannot cut the answer short.
            handle = open(path, "rb")  # noqa: SIM115 - closed by the `with` below
        except OSError:  # deleted (or its folder removed) since resolve: gone, as OSS would say
            self._error(404)
            return
        with handle:
            self._send_file(handle, path)

    def _send_file(self, handle: BinaryIO, path: Path) -> None:
        size = os.fstat(handle.fileno()).st_size
        first, last = 0, size - 1
        range_header = self.headers.get("Range")
        if range_header:
            parsed = _parse_range(range_header, size)
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            first, last = parsed
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            self.send_response(200)
        length = max(0, last - first + 1)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if self.command == "HEAD":
            return
        handle.seek(first)
        _copy(handle, self.wfile, length)


def _make_handler(server: LocalPresignServer) -> type[BaseHTTPRequestHandler]:
    return type("BoundPresignHandler", (PresignHandler,), {"presign": server})


def _copy(source: BinaryIO, target: io.BufferedIOBase, length: int) -> None:
    write = target.write
    remaining = length
    while remaining > 0:
        block = source.read(min(_COPY_CHUNK, remaining))
        if not block:
            break
        write(block)
        remaining -= len(block)
