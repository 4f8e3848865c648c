"""A bucket as a directory: `<root>/<bucket>/<key>`, for `segflow run`, `segflow invoke` and the tests.

`local_buckets(root)` is the storage factory the local tools hand the services through `Deps` (the
layer itself only knows OSS).

Writes are atomic (a temporary file under `<root>/.segflow-tmp/`, then a rename), put-if-absent is atomic
too (a hard link fails if the name exists), ETags are the upper-case MD5 hex OSS gives for simple uploads.
`presign_get` returns a loopback URL served by `LocalPresignServer`: HMAC-signed and expiring like an OSS
presigned URL (expired or tampered: 403, missing: 404, `Range` supported), so the local engine fetches
inputs over HTTP exactly as the real service fetches from OSS.
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
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import BinaryIO, ClassVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.storage.base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PART_SIZE,
    ObjectInfo,
    Storage,
    check_key,
    check_range,
)
from segflow_engine.httpwire import QuietThreadingHTTPServer

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_TMP_DIR = ".segflow-tmp"
_COPY_CHUNK = 1024 * 1024


_MAX_NAME_BYTES = 255  # a file name's limit on Linux file systems; OSS allows longer key segments


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        while block := handle.read(_COPY_CHUNK):
            digest.update(block)
    return digest.hexdigest().upper()


class LocalDirStorage(Storage):
    """One bucket under `root`. `presign_base_url`, when given, is used as is (`<base>/<bucket>/<key>`,
    unsigned) for a directory something else already serves; otherwise URLs come from `presign_server`
    (default: the process-wide `LocalPresignServer`, started on first use)."""

    def __init__(
        self,
        root: Path,
        bucket: str,
        presign_base_url: str | None = None,
        *,
        presign_server: LocalPresignServer | None = None,
    ) -> None:
        if not _BUCKET_NAME.match(bucket):
            raise StorageError(f"invalid bucket name {bucket!r}", code="InvalidBucketName", http_status=400)
        self.root = Path(root).resolve()
        self.bucket = bucket
        self.bucket_dir = self.root / bucket
        self.presign_base_url = presign_base_url.rstrip("/") if presign_base_url else None
        self._presign_server = presign_server
        self._etags: dict[Path, tuple[int, int, str]] = {}
        self._etag_lock = threading.Lock()

    # -- paths ---------------------------------------------------------------------------------------
    def path_for(self, key: str) -> Path:
        """The file that holds `key`; keys that would leave the bucket directory are refused."""
        check_key(key)
        parts = key.split("/")
        too_long = any(len(part.encode("utf-8")) > _MAX_NAME_BYTES for part in parts)
        if too_long or any(part in ("", ".", "..") for part in parts) or "\\" in key:
            # OSS accepts these, a file system cannot hold them faithfully: refuse rather than alias.
            raise StorageError(
                f"key {key!r} cannot be stored in a local directory",
                code="InvalidObjectName",
                http_status=400,
            )
        return self.bucket_dir.joinpath(*parts)

    def _existing_file(self, key: str) -> Path:
        path = self.path_for(key)
        if not path.is_file():
            raise ObjectNotFoundError(f"no object {key!r} in bucket {self.bucket}")
        return path

    def _tmp_file(self) -> tuple[int, Path]:
        tmp_dir = self.root / _TMP_DIR
        tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=f"{self.bucket}-")
        return fd, Path(name)

    # -- reads ---------------------------------------------------------------------------------------
    def etag_of(self, path: Path) -> str:
        stat = path.stat()
        with self._etag_lock:
            cached = self._etags.get(path)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        etag = _md5_file(path)
        with self._etag_lock:
            self._etags[path] = (stat.st_size, stat.st_mtime_ns, etag)
        return etag

    def head(self, key: str) -> ObjectInfo:
        path = self._existing_file(key)
        stat = path.stat()
        return ObjectInfo(key=key, size=stat.st_size, etag=self.etag_of(path), last_modified=stat.st_mtime)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        check_range(offset, length)
        path = self._existing_file(key)
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def get_bytes(self, key: str) -> bytes:
        return self._existing_file(key).read_bytes()

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        handle = open(self._existing_file(key), "rb")  # noqa: SIM115 - closed by the generator

        def chunks() -> Iterator[bytes]:
            with handle:
                while block := handle.read(chunk_size):
                    yield block

        return chunks()

    # -- writes --------------------------------------------------------------------------------------
    def _write_tmp(self, chunks: Iterable[bytes]) -> tuple[Path, str]:
        fd, tmp = self._tmp_file()
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in chunks:
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, digest.hexdigest().upper()

    def _publish(self, tmp: Path, key: str, etag: str, *, if_absent: bool) -> str:
        try:
            path = self.path_for(key)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if if_absent:
                    try:
                        os.link(tmp, path)  # atomic: fails if the name exists, never half-written
                    except FileExistsError as exc:
                        raise ObjectExistsError(
                            f"object {key!r} already exists in bucket {self.bucket}"
                        ) from exc
                else:
                    if path.is_dir():
                        raise IsADirectoryError(str(path))
                    tmp.replace(path)
            except (NotADirectoryError, IsADirectoryError) as exc:
                raise StorageError(
                    f"key {key!r} clashes with another key's directory in {self.bucket_dir}",
                    code="InvalidObjectName",
                    http_status=400,
                ) from exc
            stat = path.stat()
            with self._etag_lock:
                self._etags[path] = (stat.st_size, stat.st_mtime_ns, etag)
            return etag
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        self.path_for(key)
        tmp, etag = self._write_tmp([data])
        return self._publish(tmp, key, etag, if_absent=if_absent)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        self.path_for(key)
        tmp, etag = self._write_tmp(chunks)
        return self._publish(tmp, key, etag, if_absent=False)

    # -- listing and deletion ------------------------------------------------------------------------
    def _keys_under(self, prefix: str) -> list[str]:
        # Walk only the deepest directory the prefix names, so listing `segflow-jobs/pending/` never
        # visits finished records.
        directory, _, _ = prefix.rpartition("/")
        if directory and any(part in ("", ".", "..") for part in directory.split("/")):
            return []
        start = self.bucket_dir.joinpath(*directory.split("/")) if directory else self.bucket_dir
        if not start.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(start):
            rel = Path(dirpath).relative_to(self.bucket_dir).as_posix()
            base = "" if rel == "." else rel + "/"
            keys.extend(base + name for name in filenames if (base + name).startswith(prefix))
        return keys

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        if page_size <= 0:
            raise ValueError("page_size must be > 0")
        # Python orders str by code point, which is the UTF-8 byte order OSS lists in.
        keys = sorted(k for k in self._keys_under(prefix) if k > start_after)

        def pages() -> Iterator[ObjectInfo]:
            for first in range(0, len(keys), page_size):
                for key in keys[first : first + page_size]:
                    with contextlib.suppress(ObjectNotFoundError):  # deleted since the walk
                        yield self.head(key)

        return pages()

    def delete(self, key: str) -> None:
        path = self.path_for(key)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        with self._etag_lock:
            self._etags.pop(path, None)
        # Drop directories left empty, so listings of pending records stay cheap.
        parent = path.parent
        while parent != self.bucket_dir and self.bucket_dir in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    # -- presigned URLs ------------------------------------------------------------------------------
    def presign_get(self, key: str, expires_seconds: int) -> str:
        self.path_for(key)
        if self.presign_base_url:
            return f"{self.presign_base_url}/{self.bucket}/{quote(key, safe='/')}"
        server = self._presign_server or LocalPresignServer.shared()
        return server.presign(self.root, self.bucket, key, expires_seconds)


class LocalPresignServer:
    """A loopback HTTP server for presigned GETs of local buckets.

    URLs look like `http://127.0.0.1:<port>/<root-id>/<bucket>/<key>?Expires=<epoch>&Signature=<hmac>`:
    the signature is an HMAC-SHA256 (per-server random key) over root id, bucket, key and expiry, so a
    changed path or expiry is refused with 403 (like OSS's `SignatureDoesNotMatch` / `AccessDenied`)."""

    _shared: ClassVar[LocalPresignServer | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, host: str = "127.0.0.1", clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._roots: dict[str, Path] = {}
        self._root_ids: dict[Path, str] = {}
        self._lock = threading.Lock()
        self._httpd = QuietThreadingHTTPServer((host, 0), _make_handler(self))
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
        root_id = self._root_id(root)
        expires = int(self._clock()) + int(expires_seconds)
        signature = self._sign(root_id, bucket, key, expires)
        path = quote(f"{root_id}/{bucket}/{key}", safe="/")
        return f"{self.base_url}/{path}?Expires={expires}&Signature={signature}"

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


def _make_handler(server: LocalPresignServer) -> type[BaseHTTPRequestHandler]:
    class PresignHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

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

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            status, path = server.resolve(self.path)
            if path is None:
                self._error(status)
                return
            size = path.stat().st_size
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
            with open(path, "rb") as handle:
                handle.seek(first)
                _copy(handle, self.wfile, length)

    return PresignHandler


def _copy(source: BinaryIO, target: io.BufferedIOBase, length: int) -> None:
    write = target.write
    remaining = length
    while remaining > 0:
        block = source.read(min(_COPY_CHUNK, remaining))
        if not block:
            break
        write(block)
        remaining -= len(block)


class LocalBuckets:
    """The `Deps.storage_for` of local runs: one `LocalDirStorage` per bucket directory under `root`."""

    def __init__(self, root: Path, *, presign_server: LocalPresignServer | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self._presign_server = presign_server
        self._storages: dict[str, LocalDirStorage] = {}
        self._lock = threading.Lock()

    def __call__(self, bucket: str, region: str | None = None) -> LocalDirStorage:
        with self._lock:
            storage = self._storages.get(bucket)
            if storage is None:
                storage = LocalDirStorage(self.root, bucket, presign_server=self._presign_server)
                self._storages[bucket] = storage
            return storage

    def names(self) -> tuple[str, ...]:
        """The buckets that exist (directories with a valid bucket name), for the collector to scan."""
        if not self.root.is_dir():
            return ()
        return tuple(sorted(p.name for p in self.root.iterdir() if p.is_dir() and _BUCKET_NAME.match(p.name)))
