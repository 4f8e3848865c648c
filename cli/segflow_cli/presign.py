"""Presigned GET URLs for local buckets: an HMAC-signed, expiring loopback URL per object.

`LocalPresignServer` serves `http://127.0.0.1:<port>/<root-id>/<bucket>/<key>?Expires=<epoch>&Signature=<hmac>`
the way OSS serves a presigned URL: expired or tampered 403, missing 404, one `Range` honoured (206/416).
It is a WSGI application on waitress (`segflow_engine.wsgiserver`, as the engine is). In the process that
signs, it lives as long as that process: right for `segflow run` (which waits for every job) and the tests;
`segflow invoke` signs through `segflow_cli.urlserver`, this class in its own process.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import mimetypes
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Protocol
from urllib.parse import parse_qs, quote, unquote, urlsplit

from segflow.errors import StorageError
from segflow_cli.bucketpaths import bucket_object_path
from segflow_engine.limits import ServerLimits
from segflow_engine.wsgiserver import WsgiServer, listening_socket

_COPY_CHUNK = 1024 * 1024
CONTROL_PREFIX = "/.segflow/"
"""Paths a subclass may answer itself (`control`); no object URL starts so (root ids never have a dot)."""
MAX_CONTROL_BODY = 64 * 1024
# Loopback clients only (the engine, the services' tests): a few threads, since files go out on the I/O
# thread; a control body is small.
URL_SERVER_LIMITS = ServerLimits(threads=8, max_connections=256, max_body_bytes=MAX_CONTROL_BODY)
StartResponse = Callable[..., Any]


@dataclass(frozen=True)
class Reply:
    """An answer of the server: status, headers, body."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)


class Presigner(Protocol):
    """What `LocalDirStorage.presign_get` needs: a URL for one object of one bucket directory."""

    def presign(self, root: Path, bucket: str, key: str, expires_seconds: int) -> str: ...


class LocalPresignServer:
    """A loopback HTTP server for presigned GETs of local buckets; files go out on waitress's I/O thread.

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
        self._host = host
        self._http = WsgiServer(self._wsgi, listening_socket(host, port), URL_SERVER_LIMITS).start()

    @classmethod
    def shared(cls) -> LocalPresignServer:
        """The process-wide server, started on first use."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._shared = cls()
            return cls._shared

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        return int(self._http.port)

    def close(self) -> None:
        self._http.stop()

    def _root_id(self, root: Path) -> str:
        with self._lock:
            root_id = self._root_ids.get(root)
            if root_id is None:
                root_id = f"r{len(self._root_ids)}"
                self._root_ids[root] = root_id
                self._roots[root_id] = root
            return root_id

    def _sign(self, root_id: str, bucket: str, key: str, expires: int) -> str:
        """HMAC-SHA256 over all four under the server's key: a changed path or expiry is refused, as OSS
        refuses one (`SignatureDoesNotMatch` / `AccessDenied`)."""
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

    def _wsgi(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application: control requests, then the signed object URLs (GET and HEAD)."""
        method = str(environ.get("REQUEST_METHOD", "GET"))
        head = method == "HEAD"
        target = _request_target(environ)
        with self.serving():
            if target.startswith(CONTROL_PREFIX):
                headers = {
                    k[5:].replace("_", "-").lower(): str(v)
                    for k, v in environ.items()
                    if k.startswith("HTTP_")
                }
                reply = self.control(method, target, headers, _control_body(environ))
                if reply is not None:
                    return _reply(start_response, reply, head=head)
            if method not in ("GET", "HEAD"):
                return _error(start_response, 405, head=head)
            status, path = self.resolve(target)
            if path is None:
                return _error(start_response, status, head=head)
            try:
                # Held open while sent: a concurrent delete cannot cut the answer short.
                handle = open(path, "rb")  # noqa: SIM115 - closed once sent
            except OSError:  # deleted (or its folder removed) since resolve: gone, as OSS would say
                return _error(start_response, 404, head=head)
            return _send_file(handle, path, environ, start_response)

    def control(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        """The answer to a request under `CONTROL_PREFIX`, or None; this server has none."""
        return None

    def resolve(self, raw_path: str) -> tuple[int, Path | None]:
        """(HTTP status, file) for a request path with query: 200 and the file, or 403 / 404 / 400."""
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
            path = bucket_object_path(root, bucket, key)
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


def _request_target(environ: Mapping[str, Any]) -> str:
    """The path and query as sent (waitress's `REQUEST_URI`; else rebuilt from the decoded parts)."""
    target = environ.get("REQUEST_URI")
    if target:
        return str(target)
    query = str(environ.get("QUERY_STRING", ""))
    return quote(str(environ.get("PATH_INFO", "/")), safe="/") + (f"?{query}" if query else "")


def _control_body(environ: Mapping[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    return environ["wsgi.input"].read(min(length, MAX_CONTROL_BODY + 1)) if length > 0 else b""


def _reply(start_response: StartResponse, reply: Reply, *, head: bool = False) -> list[bytes]:
    headers = [*reply.headers, ("Content-Length", str(len(reply.body)))]
    start_response(f"{reply.status} {_PHRASES.get(reply.status, 'Status')}", headers)
    return [] if head else [reply.body]


def _error(start_response: StartResponse, status: int, *, head: bool) -> list[bytes]:
    return _reply(
        start_response, Reply(status, f"{status}\n".encode(), [("Content-Type", "text/plain")]), head=head
    )


_PHRASES = {200: "OK", 206: "Partial Content", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Request Entity Too Large", 416: "Range Not Satisfiable",
            503: "Service Unavailable"}  # fmt: skip


def _send_file(
    handle: BinaryIO, path: Path, environ: Mapping[str, Any], start_response: StartResponse
) -> Iterable[bytes]:
    size = os.fstat(handle.fileno()).st_size
    first, last = 0, size - 1
    headers = [("Accept-Ranges", "bytes")]
    range_header = environ.get("HTTP_RANGE")
    status = 200
    if range_header:
        parsed = _parse_range(str(range_header), size)
        if parsed is None:
            handle.close()
            return _reply(start_response, Reply(416, b"", [("Content-Range", f"bytes */{size}")]))
        first, last = parsed
        status = 206
        headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    length = max(0, last - first + 1)
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    headers += [("Content-Type", content_type), ("Content-Length", str(length))]
    start_response(f"{status} {_PHRASES[status]}", headers)
    if environ.get("REQUEST_METHOD") == "HEAD":
        handle.close()
        return []
    handle.seek(first)
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:  # waitress sends `length` bytes from here, on its I/O thread
        sent: Iterable[bytes] = wrapper(handle, _COPY_CHUNK)
        return sent
    return _blocks(handle, length)


def _blocks(handle: BinaryIO, length: int) -> Iterator[bytes]:
    with handle:
        remaining = length
        while remaining > 0 and (block := handle.read(min(_COPY_CHUNK, remaining))):
            remaining -= len(block)
            yield block
