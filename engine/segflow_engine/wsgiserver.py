"""A WSGI application served by waitress: the one HTTP server of segflow's local tools (the engine and the
local URL server of `segflow run` / `segflow invoke`).

    server = WsgiServer(app, listening_socket("127.0.0.1", 0), ServerLimits())
    server.start()          # on a background thread (or server.serve_forever() on this one); then .stop()

Why waitress, and which of its bounds stands for what: shared/ARCHITECTURE.md ("The HTTP server").
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from waitress.server import create_server

from segflow_engine.limits import ServerLimits

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
STOP_SECONDS = 5.0  # at stop, for the loop to end and for answers being computed to finish


def listening_socket(host: str, port: int, backlog: int = 128) -> socket.socket:
    """A TCP socket bound to `host:port` and listening (port 0 picks a free one): bound before the
    application is built, so the application can know its own address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class WsgiServer:
    """`app` on `sock` within `limits`: waitress's I/O loop and its fixed pool of `limits.threads`."""

    def __init__(self, app: WsgiApp, sock: socket.socket, limits: ServerLimits) -> None:
        self.port = int(sock.getsockname()[1])
        self._server: Any = create_server(app, sockets=[sock], **limits.adjustments())
        self._serving = threading.Event()
        self._loop_ended = threading.Event()
        self._stopped = False
        self._sockets_closed = False

    @property
    def open_connections(self) -> int:
        """Client connections open now (waitress's channels)."""
        return len(self._server.active_channels)

    def serve_forever(self) -> None:
        """Runs waitress's loop on the calling thread until `stop()` (from another thread)."""
        self._serving.set()
        try:
            self._server.run()
        finally:
            self._loop_ended.set()

    def start(self) -> WsgiServer:
        """Serves on a background thread and returns at once."""
        threading.Thread(target=self.serve_forever, name="segflow-http", daemon=True).start()
        self._serving.wait()
        return self

    def stop(self) -> None:
        """Closes the listening socket and every connection, then stops the threads (an answer being
        computed may finish first, for up to `STOP_SECONDS`)."""
        if self._stopped:
            return
        self._stopped = True
        if self._serving.is_set() and not self._loop_ended.is_set():
            # The loop's own thread closes its sockets: waitress's trigger runs the call there.
            with contextlib.suppress(OSError):
                self._server.trigger.pull_trigger(self._close_sockets)
            self._loop_ended.wait(STOP_SECONDS)
        if not self._sockets_closed:  # the loop never ran, or ended by itself (Ctrl-C)
            self._close_sockets()
        self._server.task_dispatcher.shutdown(timeout=STOP_SECONDS)

    def _close_sockets(self) -> None:
        self._sockets_closed = True
        for channel in list(self._server.active_channels.values()):
            channel.handle_close()
        self._server.close()  # the listening socket and the trigger: the loop's map is empty, it ends
