"""Local presigned URLs that outlive `segflow invoke`: one background URL server per bucket directory.

`segflow invoke on_upload` hands a video's presigned URL to the engine and exits; the engine fetches it when
a worker frees up, minutes later. So a background process serves it, one per bucket directory (POSIX), that
`BackgroundUrls` starts when none is alive (nothing for the user to remember) and that stops by itself once
every URL it signed has expired (`UrlServer.should_stop`). Why not the engine: shared/ARCHITECTURE.md
("The HTTP server").
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import StorageError
from segflow_cli.bucketpaths import bucket_object_path
from segflow_cli.presign import CONTROL_PREFIX, LocalPresignServer, Reply

# `<root>/.segflow-urls/` (mode 0700) holds `lock`, `state.json` (mode 0600: pid, port, HMAC key, and
# `until`, the latest expiry of any URL signed) and `server.log`.
STATE_DIR = ".segflow-urls"
STATE_FILE = "state.json"
LOCK_FILE = "lock"
LOG_FILE = "server.log"
SIGN_PATH = CONTROL_PREFIX + "sign"
AUTH_HEADER = "X-Segflow-Auth"
DEFAULT_IDLE_SECONDS = 60.0
MAX_EXPIRES_SECONDS = 7 * 24 * 3600  # what SEGFLOW_PRESIGN_SECONDS allows (OSS's own ceiling too)
_MAX_BODY = 64 * 1024
_LOCK_TRIES = 10  # every 50 ms: a client probing the lock holds it for microseconds


def state_dir_of(root: Path) -> Path:
    return Path(root).expanduser().resolve() / STATE_DIR


def mac(key: bytes, purpose: str, body: bytes) -> str:
    """The HMAC that authenticates a control request or answer (the key itself never travels)."""
    return hmac.new(key, purpose.encode() + b"\n" + body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class State:
    pid: int
    port: int
    key: bytes
    until: int

    def to_json(self) -> bytes:
        fields = {"pid": self.pid, "port": self.port, "key": self.key.hex(), "until": self.until}
        return json.dumps(fields).encode()


def read_state(state_dir: Path) -> tuple[State | None, str]:
    """The state file, or None and why: missing, unreadable, or not private to this user (then ignored,
    since whoever can read it can sign URLs)."""
    path = state_dir / STATE_FILE
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        return None, f"no state file ({exc.strerror})"
    with os.fdopen(fd, "rb") as handle:
        stat = os.fstat(handle.fileno())
        if stat.st_uid != os.getuid() or stat.st_mode & 0o077:
            return None, f"{path} is readable or writable by others (it must be mode 0600): ignored"
        raw = handle.read(_MAX_BODY)
    try:
        data = json.loads(raw)
        state = State(int(data["pid"]), int(data["port"]), bytes.fromhex(data["key"]), int(data["until"]))
    except (ValueError, KeyError, TypeError):
        return None, f"{path} is not a state file"
    return (state, "") if len(state.key) >= 16 and 0 < state.port < 65536 else (None, f"{path} is invalid")


def write_state(state_dir: Path, state: State) -> None:
    """Atomically, created 0600 (never readable by others, not even for a moment)."""
    tmp = state_dir / f".{STATE_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(state.to_json())
    tmp.replace(state_dir / STATE_FILE)


def make_state_dir(state_dir: Path) -> None:
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if state_dir.stat().st_mode & 0o077:
        state_dir.chmod(0o700)


def try_lock(state_dir: Path) -> int | None:
    """An fd holding the exclusive lock of `state_dir`, or None when a live server holds it."""
    import fcntl

    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def server_alive(state_dir: Path) -> bool:
    """A server holds the lock (starting, serving or stopping). It holds it for its whole life, so a state
    file whose lock is free belongs to a dead server (stale): liveness is that lock, never the pid (pids
    are reused)."""
    if not (state_dir / LOCK_FILE).exists():
        return False
    fd = try_lock(state_dir)
    if fd is None:
        return True
    os.close(fd)  # releases the lock
    return False


# ------------------------------------------------------------------------------------------- the server


class UrlServer(LocalPresignServer):
    """The presign server of one bucket directory, signing on request and tracking its own lifetime."""

    def __init__(self, root: Path, state_dir: Path, *, port: int, key: bytes, until: int, idle: float):
        super().__init__(port=port, key=key)
        self.root = root
        self.state_dir = state_dir
        self.until = until
        self.idle = idle
        self.stopping = False
        self._state_lock = threading.Lock()
        self._root_id(root)  # the only root: always `r0`, so a successor's URLs match its predecessor's

    def state(self) -> State:
        return State(os.getpid(), self.port, self._key, self.until)

    def control(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply | None:
        if method != "POST" or path != SIGN_PATH:
            return None
        status, answer = self._sign_request(headers, body)
        content = [("Content-Type", "application/json"), (AUTH_HEADER, mac(self._key, "signed", answer))]
        return Reply(status, answer, content)

    def _sign_request(self, headers: Mapping[str, str], body: bytes) -> tuple[int, bytes]:
        if not 0 < len(body) <= _MAX_BODY or len(body) != int(headers.get("content-length") or len(body)):
            return 413, b'{"error": "body size"}'
        if not hmac.compare_digest(headers.get(AUTH_HEADER.lower(), ""), mac(self._key, "sign", body)):
            return 403, b'{"error": "not signed with this server\'s key"}'
        try:
            fields = json.loads(body)
            bucket, key, seconds = str(fields["bucket"]), str(fields["key"]), int(fields["expires_seconds"])
            bucket_object_path(self.root, bucket, key)
        except (ValueError, KeyError, TypeError, StorageError) as exc:
            return 400, json.dumps({"error": str(exc)}).encode()
        if not 0 < seconds <= MAX_EXPIRES_SECONDS:
            return 400, b'{"error": "expires_seconds out of range"}'
        with self._state_lock:
            if self.stopping:
                return 503, b'{"error": "stopping"}'
            expires = int(time.time()) + seconds
            url = self.signed_url(self.root, bucket, key, expires)
            if expires > self.until:
                self.until = expires
                write_state(self.state_dir, self.state())
        return 200, json.dumps({"url": url, "until": self.until}).encode()

    def should_stop(self) -> bool:
        """Every URL expired and nobody asked for anything for `idle` seconds: refuse new work and stop."""
        with self._state_lock:
            quiet = self.in_flight == 0 and time.monotonic() - self.last_activity >= self.idle
            if quiet and time.time() > self.until:
                self.stopping = True
            return self.stopping


def _log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} segflow url server [{os.getpid()}]: {message}", file=sys.stderr, flush=True)


def _open_server(root: Path, state_dir: Path, idle: float) -> UrlServer:
    """A server over the previous state when its URLs are still valid (same key, port and `until`), so the
    URLs a crashed server signed work again; else a fresh one."""
    import secrets

    previous, _ = read_state(state_dir)
    if previous is not None and previous.until > time.time():
        try:
            server = UrlServer(
                root, state_dir, port=previous.port, key=previous.key, until=previous.until, idle=idle
            )
            _log(
                f"took over from stale pid {previous.pid}: its URLs (valid until {previous.until}) work again"
            )
            return server
        except OSError as exc:
            _log(
                f"port {previous.port} of stale pid {previous.pid} is taken ({exc.strerror}): "
                "the URLs it signed are lost"
            )
        return UrlServer(root, state_dir, port=0, key=previous.key, until=previous.until, idle=idle)
    return UrlServer(root, state_dir, port=0, key=secrets.token_bytes(32), until=0, idle=idle)


def _still_ours(state_dir: Path, lock_fd: int) -> bool:
    """The lock file is still the one we lock (a removed folder means someone else may start afresh)."""
    try:
        return (state_dir / LOCK_FILE).stat().st_ino == os.fstat(lock_fd).st_ino
    except OSError:
        return False


def serve(root: Path, idle: float, ready: int | None = None) -> int:
    """Run the server of `root` until it may stop; 3 when another server already runs there."""
    state_dir = state_dir_of(root)
    make_state_dir(state_dir)
    lock_fd = None
    for _ in range(_LOCK_TRIES):
        lock_fd = try_lock(state_dir)
        if lock_fd is not None:
            break
        time.sleep(0.05)
    if lock_fd is None:
        if ready is not None:
            os.write(ready, b"3")
        return 3
    server = _open_server(root, state_dir, idle)
    write_state(state_dir, server.state())
    _log(f"serving {root} on {server.base_url}; stops {idle:g} s after the last URL expires")
    if ready is not None:
        os.write(ready, b"1")
        os.close(ready)
    try:
        while not server.should_stop():
            time.sleep(0.25)
            if not _still_ours(state_dir, lock_fd):
                _log("the state folder was removed: stopping")
                break
            if not (state_dir / STATE_FILE).exists():
                write_state(state_dir, server.state())
    finally:
        server.close()
        if time.time() > server.until and _still_ours(state_dir, lock_fd):
            (state_dir / STATE_FILE).unlink(missing_ok=True)
        _log("stopped")
        os.close(lock_fd)
    return 0


# ------------------------------------------------------------------------------------------- the client


class BackgroundUrls:
    """The `Presigner` of `segflow invoke`: URLs of `root` signed by its background server, which this
    starts when none is alive. Every wait is bounded by `start_timeout`."""

    def __init__(
        self, root: Path, *, idle_seconds: float = DEFAULT_IDLE_SECONDS, start_timeout: float = 30.0
    ) -> None:
        self.root = Path(root).expanduser().resolve()
        self.state_dir = self.root / STATE_DIR
        self.idle_seconds = idle_seconds
        self.start_timeout = start_timeout
        self._lock = threading.Lock()

    def presign(self, root: Path, bucket: str, key: str, expires_seconds: int) -> str:
        """Reads the state and asks the server to sign (`POST /.segflow/sign`, the body authenticated with
        the key's HMAC, the answer too); with no live server it starts one (`_launch`: its own session, no
        terminal, an environment without credentials) and waits, bounded, until it answers."""
        if Path(root).resolve() != self.root:
            raise StorageError(
                f"{root} is not served by the URL server of {self.root}", code="InvalidArgument"
            )
        body = json.dumps({"bucket": bucket, "key": key, "expires_seconds": int(expires_seconds)}).encode()
        deadline = time.monotonic() + self.start_timeout
        with self._lock:  # handlers may presign from several threads: one of them starts the server
            while True:
                state, problem = read_state(self.state_dir)
                if state is not None:
                    url, problem = _ask(state, body)
                    if url:
                        return url
                if not server_alive(self.state_dir):
                    problem = self._launch(deadline) or problem
                if time.monotonic() >= deadline:
                    raise StorageError(
                        f"no presigned-URL server for {self.root} within {self.start_timeout:g} s: {problem} "
                        f"(its log: {self.state_dir / LOG_FILE})",
                        code="ServiceUnavailable",
                        http_status=503,
                    )
                time.sleep(0.05)

    def _launch(self, deadline: float) -> str:
        """Start the server in the background and wait until it serves; what went wrong, or ""."""
        import subprocess

        make_state_dir(self.state_dir)
        log_path = self.state_dir / LOG_FILE
        if log_path.exists() and log_path.stat().st_size > 1024 * 1024:
            log_path.unlink()
        command = [
            sys.executable,
            "-m",
            "segflow_cli.urlserver",
            str(self.root),
            "--idle",
            f"{self.idle_seconds:g}",
        ]
        with open(log_path, "ab") as log:
            launcher = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=_server_env(),
                cwd=self.state_dir, start_new_session=True, close_fds=True,
            )  # fmt: skip
        try:
            code = launcher.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(timeout=5)
            return "the server did not start in time"
        if code == 0:
            state, _ = read_state(self.state_dir)
            if state is not None:
                logging.getLogger("segflow.urls").info(
                    "presigned URLs of %s are served by a background process (pid %d, 127.0.0.1:%d) that "
                    "stops by itself %g s after the last URL it signs expires; log: %s",
                    self.root, state.pid, state.port, self.idle_seconds, log_path,
                )  # fmt: skip
        return "" if code in (0, 3) else f"the server exited with status {code}"


def _ask(state: State, body: bytes) -> tuple[str | None, str]:
    """The URL the server of `state` signed, or None and why not (not answering, stopping, a stranger)."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", state.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", AUTH_HEADER: mac(state.key, "sign", body)}
        connection.request("POST", SIGN_PATH, body=body, headers=headers)
        response = connection.getresponse()
        answer = response.read(_MAX_BODY)
        status, proof = response.status, response.getheader(AUTH_HEADER) or ""
    except (OSError, http.client.HTTPException) as exc:
        return None, f"the server on port {state.port} does not answer ({type(exc).__name__})"
    finally:
        connection.close()
    if not hmac.compare_digest(proof, mac(state.key, "signed", answer)):
        return None, f"port {state.port} is not this directory's URL server"
    if status == 400:
        raise StorageError(
            f"the URL server refused: {json.loads(answer).get('error')}", code="InvalidArgument"
        )
    if status != 200:
        return None, f"the server answered HTTP {status}"
    url = str(json.loads(answer)["url"])
    return url, ""


def _server_env() -> dict[str, str]:
    """What the server needs to run (our packages on the path), and no credential of the caller's."""
    import segflow

    packages = [
        str(Path(module.__file__ or ".").resolve().parents[1]) for module in (segflow, sys.modules[__name__])
    ]
    env = {
        name: os.environ[name] for name in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR") if name in os.environ
    }
    existing = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([*packages, *existing]))
    return env


def stop_background_server(root: Path, timeout: float = 10.0) -> bool:
    """SIGTERM the URL server of `root` and wait until it is gone; False when none was running."""
    state_dir = state_dir_of(root)
    state, _ = read_state(state_dir)
    if state is None or not server_alive(state_dir):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while server_alive(state_dir) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not server_alive(state_dir)


def _daemonize(root: Path, idle: float) -> int:
    """Fork the server into the background and return once it serves (0), found a live one (3) or failed.

    The launching process (`BackgroundUrls._launch`) waits for this one, so no zombie is left behind,
    and this one waits for the server's "ready" byte, so the launcher never starts a second one meanwhile.
    """
    read_end, write_end = os.pipe()
    if os.fork() == 0:  # the server: detached from the launcher's session, so a closed terminal keeps it
        os.close(read_end)
        with contextlib.suppress(OSError):
            os.setsid()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds: state handled in `serve`
        code = 1
        try:
            code = serve(root, idle, ready=write_end)
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as ready:
        answer = ready.read(1)
    return {b"1": 0, b"3": 3}.get(answer, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m segflow_cli.urlserver",
        description="serve presigned URLs of a local bucket directory in the background (segflow invoke "
        "starts it when needed; it stops by itself once every URL it signed has expired)",
    )
    parser.add_argument("root", type=Path, help="the bucket directory (--bucket-dir of segflow invoke)")
    parser.add_argument(
        "--idle", type=float, default=DEFAULT_IDLE_SECONDS, help="seconds of quiet before it stops"
    )
    parser.add_argument("--foreground", action="store_true", help="serve in this process (for debugging)")
    args = parser.parse_args(argv)
    root = args.root.expanduser().resolve()
    if args.foreground:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        return serve(root, args.idle)
    return _daemonize(root, args.idle)


if __name__ == "__main__":
    sys.exit(main())
