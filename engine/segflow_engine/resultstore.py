"""Where the engine keeps the files it produced, and the expiring signed URLs it hands out for them.

A result lives in `<root>/<result id>/<name>`. Its URL is
`<base>/results/<id>/<name>?Expires=<unix seconds>&Signature=<hex HMAC-SHA256>` signed with a secret made
per process, so URLs can't be guessed and stop working after a restart — like the service's own links,
which are valid for 30 minutes (PicWish: 1 hour). An expired or altered URL is refused with 403; files
are deleted some time after the last URL for them expired.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode

RESULT_TTL_SECONDS = 30 * 60
PICWISH_RESULT_TTL_SECONDS = 60 * 60
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ID_PATTERN = re.compile(r"^[a-f0-9]{32}$")

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".mp4": "video/mp4",
    ".webm": "video/webm",
    ".json": "application/json",
}


class ResultAccessError(Exception):
    """A result URL was refused: `status` is 403 (expired, altered) or 404 (no such result any more)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class StoredResult:
    result_id: str
    name: str
    path: Path
    expires: int
    url: str


@dataclass
class ResultStore:
    """Thread-safe store of result files with HMAC-signed expiring URLs."""

    root: Path
    base_url: str = "http://127.0.0.1"
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    clock: Callable[[], float] = time.time
    # How long files stay after their URL expired, so a download that began just before still finishes.
    grace_seconds: float = 60.0

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._deadlines: dict[str, float] = {}

    # -- writing -----------------------------------------------------------------------------------
    def new_result_id(self) -> str:
        return secrets.token_hex(16)

    def put_bytes(
        self, name: str, data: bytes, *, ttl_seconds: int = RESULT_TTL_SECONDS, result_id: str | None = None
    ) -> StoredResult:
        result_id, path = self._prepare(name, result_id)
        tmp = path.with_name(f".{name}.part")
        tmp.write_bytes(data)
        tmp.replace(path)
        return self._register(result_id, name, path, ttl_seconds)

    def put_file(
        self,
        name: str,
        source: Path,
        *,
        ttl_seconds: int = RESULT_TTL_SECONDS,
        result_id: str | None = None,
    ) -> StoredResult:
        """Moves `source` (a file the engine made, e.g. a rendered video) into the store."""
        result_id, path = self._prepare(name, result_id)
        shutil.move(str(source), str(path))
        return self._register(result_id, name, path, ttl_seconds)

    def reserve_path(self, name: str, result_id: str | None = None) -> tuple[str, Path]:
        """A path inside the store to write a result into directly (large videos); `register` it after."""
        return self._prepare(name, result_id)

    def register(self, result_id: str, name: str, *, ttl_seconds: int = RESULT_TTL_SECONDS) -> StoredResult:
        path = self.root / result_id / name
        if not path.is_file():
            raise FileNotFoundError(path)
        return self._register(result_id, name, path, ttl_seconds)

    def _prepare(self, name: str, result_id: str | None) -> tuple[str, Path]:
        if not _NAME_PATTERN.match(name):
            raise ValueError(f"result name {name!r} is not a plain file name")
        result_id = result_id or self.new_result_id()
        if not _ID_PATTERN.match(result_id):
            raise ValueError(f"result id {result_id!r} is malformed")
        directory = self.root / result_id
        directory.mkdir(parents=True, exist_ok=True)
        return result_id, directory / name

    def _register(self, result_id: str, name: str, path: Path, ttl_seconds: int) -> StoredResult:
        expires = int(self.clock()) + int(ttl_seconds)
        with self._lock:
            self._deadlines[result_id] = max(self._deadlines.get(result_id, 0.0), float(expires))
        return StoredResult(result_id, name, path, expires, self.url_for(result_id, name, expires))

    # -- URLs --------------------------------------------------------------------------------------
    def url_for(self, result_id: str, name: str, expires: int) -> str:
        query = urlencode({"Expires": str(expires), "Signature": self._signature(result_id, name, expires)})
        return f"{self.base_url.rstrip('/')}/results/{result_id}/{quote(name)}?{query}"

    def _signature(self, result_id: str, name: str, expires: int) -> str:
        message = f"{result_id}/{name}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def resolve(self, result_id: str, name: str, expires: str | None, signature: str | None) -> Path:
        """The file a result URL points at, if its signature holds and it has not expired."""
        if not expires or not signature:
            raise ResultAccessError(403, "the URL is not signed")
        if not _ID_PATTERN.match(result_id) or not _NAME_PATTERN.match(name):
            raise ResultAccessError(404, "no such result")
        try:
            expires_at = int(expires)
        except ValueError:
            raise ResultAccessError(403, "Expires is not a number") from None
        expected = self._signature(result_id, name, expires_at)
        if not hmac.compare_digest(expected, signature.strip().lower()):
            raise ResultAccessError(403, "the signature does not match")
        if self.clock() > expires_at:
            raise ResultAccessError(403, "the URL has expired")
        path = self.root / result_id / name
        if not path.is_file():
            raise ResultAccessError(404, "no such result")
        return path

    # -- cleanup -----------------------------------------------------------------------------------
    def cleanup(self) -> int:
        """Deletes results whose URLs expired more than `grace_seconds` ago; returns how many went.

        Directories the store does not know (left by an earlier process, whose secret is gone so their URLs
        can never verify again) are deleted once they are older than the longest URL lifetime.
        """
        now = self.clock()
        with self._lock:
            expired = [
                rid for rid, deadline in self._deadlines.items() if deadline + self.grace_seconds < now
            ]
            for rid in expired:
                del self._deadlines[rid]
            known = set(self._deadlines)
        removed = 0
        for rid in expired:
            shutil.rmtree(self.root / rid, ignore_errors=True)
            removed += 1
        stale_before = time.time() - PICWISH_RESULT_TTL_SECONDS - self.grace_seconds
        for directory in self.root.iterdir():
            if directory.name in known or not _ID_PATTERN.match(directory.name):
                continue
            try:
                if directory.stat().st_mtime < stale_before:
                    shutil.rmtree(directory, ignore_errors=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def content_type(self, name: str) -> str:
        return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


class PeriodicCleaner:
    """Runs `ResultStore.cleanup` (and any other housekeeping) every `interval` seconds on a daemon thread."""

    def __init__(self, tasks: list[Callable[[], object]], interval: float = 60.0) -> None:
        self._tasks = tasks
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="segflow-engine-cleanup", daemon=True)

    def start(self) -> None:
        if self._tasks:  # nothing to do: no thread (the engine on FC must do no work between requests)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            for task in self._tasks:
                try:
                    task()
                except Exception:  # housekeeping must never kill the thread
                    continue
