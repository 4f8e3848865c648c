"""The engine on a socket: its WSGI application (`segflow_engine.app.Engine`) served by waitress
(`segflow_engine.wsgiserver`), a temporary state folder, and the periodic cleanup of expired results.

    with EngineServer(EngineConfig(port=0), credentials, actions) as server:   # serves on a thread
        server.base_url, server.endpoint, server.open_connections
    serve(host="0.0.0.0", port=9000)                                          # serves on this thread
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from segflow_engine.app import Engine
from segflow_engine.auth import EngineCredentials
from segflow_engine.backends import Backends
from segflow_engine.config import EngineConfig
from segflow_engine.pipeline import ActionsModule
from segflow_engine.resultstore import PeriodicCleaner
from segflow_engine.wsgiserver import WsgiApp, WsgiServer, listening_socket

__all__ = ["Engine", "EngineConfig", "EngineServer", "load_actions_module", "serve"]


def load_actions_module() -> ActionsModule:
    """The real models (imported only when an engine without a stub starts)."""
    import importlib

    module: ActionsModule = importlib.import_module("segflow_engine.actions")
    return module


class EngineServer:
    """The engine on a socket. The port is bound in the constructor (port 0 picks a free one)."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        credentials: EngineCredentials | None = None,
        actions: ActionsModule | None = None,
        *,
        backends: Backends | None = None,
        middleware: Callable[[Engine], WsgiApp] | None = None,
    ) -> None:
        """`backends` keep the engine's state elsewhere than `state_dir` (OSS, on Function Compute: then
        nothing runs between requests, no periodic cleanup either); `middleware` wraps the engine's WSGI
        application (`segflow_engine.fcruntime.FcRuntime`)."""
        self.config = config or EngineConfig()
        self.credentials = credentials or EngineCredentials.build()
        self._owns_state_dir = self.config.state_dir is None
        self.state_dir = self.config.state_dir or Path(tempfile.mkdtemp(prefix="segflow-engine-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        actions_module = actions if actions is not None else load_actions_module()
        sock = listening_socket(self.config.host, self.config.port, self.config.limits.backlog)
        self.port = int(sock.getsockname()[1])
        base_url = self.config.public_url or f"http://{self.host}:{self.port}"
        try:
            self.engine = Engine(
                self.credentials, actions_module, self.state_dir, base_url, self.config, backends
            )
            app = self.engine if middleware is None else middleware(self.engine)
            self._http = WsgiServer(app, sock, self.config.limits)
        except BaseException:
            sock.close()
            raise
        tasks = [self.engine.cleanup] if backends is None else []
        self._cleaner = PeriodicCleaner(tasks, self.config.cleanup_interval_seconds)
        self._stopped = threading.Event()

    @property
    def host(self) -> str:
        return _client_host(self.config.host)

    @property
    def endpoint(self) -> str:
        """`host:port`, what the official clients take as `endpoint`."""
        return f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.engine.base_url

    @property
    def open_connections(self) -> int:
        """Client connections open now, idle or not."""
        return self._http.open_connections

    def start(self) -> EngineServer:
        """Serves on a background thread and returns at once."""
        self._cleaner.start()
        self._http.start()
        return self

    def serve_forever(self) -> None:
        """Serves on the calling thread until `shutdown()` is called from another thread (or a signal)."""
        self._cleaner.start()
        try:
            self._http.serve_forever()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stops accepting requests, lets running model work finish, deletes a temporary state dir."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._http.stop()
        self._cleaner.stop()
        self.engine.close()
        if self._owns_state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> EngineServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _client_host(host: str) -> str:
    """A bind address clients can use: the wildcard addresses become loopback."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def serve(
    host: str = "127.0.0.1",
    port: int = 8780,
    *,
    workers: int = 2,
    state_dir: Path | None = None,
    credentials: EngineCredentials | None = None,
) -> None:
    """Serve the engine with the real models on the calling thread until interrupted (Ctrl-C).

    `segflow engine` is the command-line form (it also prints the keys and handles SIGTERM).
    """
    config = EngineConfig(host=host, port=port, workers=workers, state_dir=state_dir)
    server = EngineServer(config, credentials)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
