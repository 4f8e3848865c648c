"""A bounded HTTP/1.1 server: a fixed pool of threads answers requests, and no thread ever waits on a client.

One *reactor* thread (a `selectors` loop, as nginx or Envoy work) accepts connections and reads each request's
head and body into memory under deadlines; only a complete request is handed to one of `threads` worker
threads, which runs the handler and writes the answer. So:

- a client that trickles its request line, headers or body costs a socket and a buffer, never a thread, and
  is dropped after `header_timeout` / `body_timeout` (a `408` if it sent part of a request, else nothing);
- an idle keep-alive connection waits in the reactor and is closed after `idle_timeout`;
- at most `max_connections` are open: beyond that, idle keep-alive connections are closed to make room, and
  if none is idle the reactor stops accepting, so newcomers wait in the kernel's accept queue (`backlog`);
- complete requests wait for a free thread in arrival order; when `max_pending` already wait, a request is
  answered `503 ServiceUnavailable` with `Retry-After` at once, as a gateway's overload protection does,
  rather than queueing without bound;
- a request body is bounded (`max_body_bytes`, else `413`), a request head too (`max_head_bytes`, else
  `431`); chunked bodies are refused with `411` (every client of the engine sends Content-Length).

Streamed routes: a body too large to hold (the temporary bucket's uploads, up to 1 GiB) is not read by the
reactor. Once a request's head is read the server asks `streams(method, path)` (the application's one
answer to "which routes stream"); for such a request the connection goes to a worker right after the head,
with what the reactor had already read of the body, and the handler reads the rest from the socket as a
`BodyStream` (blocking, with `stream_read_timeout` per read and `stream_timeout` for the whole body; the
application applies the size limit, so `max_body_bytes` does not). So a streamed body COSTS A THREAD of the
pool while it arrives: at most `limits.stream_slots` (half the threads by default) are read at once, a
further one is answered `503` with `Retry-After` at once, and the other half of the pool always answers
the rest. A body not read to its end (refused early, or too slow) ends the connection after the answer,
with the same linger as a refusal.

A client that goes away (reset, broken pipe, timeout) is not an error of the server: one DEBUG line, never a
traceback. The handler is a `BaseHTTPRequestHandler` (see `BufferedRequestHandler`) that reads the buffered
request instead of the socket.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any

from segflow_engine.httpwire import (
    BodyStream,
    BufferedRequestHandler,
    Refusal,
    answer_bytes,
    client_went_away,
    framing,
    head_end,
    request_target,
)
from segflow_engine.limits import ServerLimits

LOG = logging.getLogger("segflow_engine.httpd")

LINGER_SECONDS = 2.0  # after a refusal, how long unread input is drained so the client reads the answer
SWEEP_SECONDS = 0.05  # how often deadlines are checked (their precision)
ACCEPT_BATCH = 256  # connections accepted per wake-up, so a burst cannot starve reading
ACCEPT_RETRY_SECONDS = 0.5  # after running out of file descriptors
WORKERS_JOIN_SECONDS = 2.0  # at close, for answers being written (daemon threads: never blocks exit)


# Connection states, reactor side.
NEW, IDLE, HEAD, BODY, BUSY, LINGER = "new", "idle", "head", "body", "busy", "linger"


@dataclass(eq=False)  # identity: kept in a set
class Connection:
    """One client connection. The reactor owns it except while a worker answers its request (BUSY)."""

    sock: socket.socket
    address: Any
    state: str = NEW
    deadline: float = 0.0
    buffer: bytearray = field(default_factory=bytearray)
    head_end: int = 0
    body_length: int = 0
    head: bytes = b""  # the request being answered
    body: bytes = b""  # all of it; on a streamed route, what the reactor had read of it
    streamed: bool = False  # a streamed route (see the module docstring)
    expect_continue: bool = False
    stream: BodyStream | None = None  # the worker's reader of a streamed body


@dataclass(frozen=True)
class ServerStats:
    open_connections: int
    threads: int  # the pool's threads plus the reactor: constant while serving
    busy: int
    pending: int
    timed_out: int
    refused_busy: int
    streams: int = 0  # streamed bodies handed to a thread and not done yet


class BoundedHTTPServer:
    """Serves `handler_class` (a `BufferedRequestHandler`) on `address` within `limits`."""

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[BufferedRequestHandler],
        limits: ServerLimits | None = None,
    ) -> None:
        self.handler_class = handler_class
        self.limits = _within_file_limit(limits or ServerLimits())
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._listener.bind(address)
            self._listener.listen(self.limits.backlog)
        except OSError:
            self._listener.close()
            raise
        self._listener.setblocking(False)
        self.server_address: tuple[Any, ...] = self._listener.getsockname()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)  # a worker never waits on the reactor (a full pipe already wakes it)
        self._selector = selectors.DefaultSelector()
        self._open: set[Connection] = set()
        self._ready: queue.Queue[Connection | None] = queue.Queue()
        self._returned: queue.SimpleQueue[tuple[Connection, bool]] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._accepting = False
        self._resume_at: float | None = None
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._lock = threading.Lock()
        self._busy = 0
        self._timed_out = 0
        self._refused_busy = 0
        self._streams = 0  # the reactor's count (it alone changes it)
        self._start_workers()  # the pool exists from the start: its size never changes

    # -- public --------------------------------------------------------------------------------------
    def serve_forever(self, poll_interval: float = SWEEP_SECONDS) -> None:
        """Runs the reactor on the calling thread until `shutdown()`."""
        self._stopped.clear()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._resume_accepting()
        next_sweep = 0.0
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(min(poll_interval, SWEEP_SECONDS)):
                    try:
                        self._on_event(key)
                    except Exception:  # a bug must cost one connection, never the server
                        LOG.exception("unexpected failure in the HTTP reactor")
                        if isinstance(key.data, Connection):
                            self._close(key.data)
                self._take_returned()
                if (now := time.monotonic()) >= next_sweep:  # deadlines: a scan of all, so not too often
                    self._expire(now)
                    next_sweep = now + SWEEP_SECONDS
        finally:
            self._close_reactor_connections()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stops `serve_forever` and waits for it to return."""
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        """Closes the listening socket and stops the pool (a request being answered may finish first)."""
        with contextlib.suppress(queue.Empty):
            while True:
                pending = self._ready.get_nowait()
                if pending is not None:
                    _close_socket(pending.sock)
        for _ in self._workers:
            self._ready.put(None)
        deadline = time.monotonic() + WORKERS_JOIN_SECONDS
        for worker in self._workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(queue.Empty):
            while True:
                _close_socket(self._returned.get_nowait()[0].sock)
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def stats(self) -> ServerStats:
        with self._lock:
            busy = self._busy
        return ServerStats(
            open_connections=len(self._open),
            threads=len(self._workers) + 1,
            busy=busy,
            pending=self._waiting(),
            timed_out=self._timed_out,
            refused_busy=self._refused_busy,
            streams=self._streams,
        )

    def streams(self, method: str, path: str) -> bool:
        """Whether this request's body is streamed to its handler rather than read whole first (see the
        module docstring); none is, unless a subclass says so."""
        return False

    def _waiting(self) -> int:
        """Complete requests no thread is free to take (one just queued for an idle thread is not waiting)."""
        with self._lock:
            idle = len(self._workers) - self._busy
        return max(0, self._ready.qsize() - idle)

    # -- reactor -------------------------------------------------------------------------------------
    def _on_event(self, key: selectors.SelectorKey) -> None:
        if key.fileobj is self._listener:
            self._accept()
        elif key.fileobj is self._wake_r:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        else:
            self._on_readable(key.data)

    def _accept(self) -> None:
        now = time.monotonic()
        for _ in range(ACCEPT_BATCH):
            if len(self._open) >= self.limits.max_connections and not self._evict_idle():
                self._pause_accepting()
                return
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:  # out of file descriptors: wait for some to close, not in a busy loop
                LOG.warning("cannot accept connections for now: %s", exc)
                self._pause_accepting(retry_after=ACCEPT_RETRY_SECONDS)
                return
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(sock, address, NEW, now + self.limits.header_timeout)
            self._open.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict_idle(self) -> bool:
        """Closes the keep-alive connection idle the longest (it reconnects if it needs to), if any."""
        idle = [c for c in self._open if c.state == IDLE]
        if not idle:
            return False
        self._drop(min(idle, key=lambda c: c.deadline), "closed idle to make room")
        return True

    def _pause_accepting(self, retry_after: float | None = None) -> None:
        """Newcomers wait in the kernel's accept queue until a connection closes (or `retry_after`)."""
        if self._accepting:
            self._selector.unregister(self._listener)
            self._accepting = False
        self._resume_at = time.monotonic() + retry_after if retry_after is not None else None

    def _resume_accepting(self) -> None:
        self._resume_at = None
        if not self._accepting and not self._stop.is_set():
            self._selector.register(self._listener, selectors.EVENT_READ, None)
            self._accepting = True

    def _on_readable(self, conn: Connection) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._drop(conn, f"read failed: {exc}")
            return
        if not data:
            self._drop(conn, "closed by the client")
            return
        if conn.state == LINGER:
            return  # input after a refusal is read and discarded
        if conn.state == IDLE:  # a new connection's header deadline runs from its accept
            conn.deadline = time.monotonic() + self.limits.header_timeout
        if conn.state in (NEW, IDLE):
            conn.state = HEAD
        conn.buffer += data
        self._advance(conn)

    def _advance(self, conn: Connection) -> None:
        """Moves a connection on as far as its buffer allows: head read → body read → to a worker."""
        try:
            if conn.state == HEAD:
                self._read_head(conn)
            if conn.state == BODY and (conn.streamed or len(conn.buffer) >= conn.head_end + conn.body_length):
                self._dispatch(conn)
        except Refusal as refusal:
            self._refuse(conn, refusal)

    def _read_head(self, conn: Connection) -> None:
        end = head_end(conn.buffer)
        if end < 0 and len(conn.buffer) <= self.limits.max_head_bytes:
            return
        if end < 0 or end > self.limits.max_head_bytes:
            raise Refusal(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                "RequestHeaderFieldsTooLarge",
                "request head too large",
            )
        head = bytes(conn.buffer[:end])
        conn.streamed = self.streams(*request_target(head))
        length, expect_continue = framing(head, None if conn.streamed else self.limits.max_body_bytes)
        conn.state, conn.head_end, conn.body_length = BODY, end, length
        conn.deadline = time.monotonic() + self.limits.body_timeout
        waits = expect_continue and length > 0 and len(conn.buffer) < end + length
        conn.expect_continue = waits and conn.streamed  # said by the stream when it reads (never if refused)
        if waits and not conn.streamed:
            with contextlib.suppress(OSError):
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _dispatch(self, conn: Connection) -> None:
        if self._waiting() >= self.limits.max_pending:
            self._refuse_busy(conn, "the engine is busy; retry shortly")
            return
        if conn.streamed and self._streams >= self.limits.stream_slots:
            self._refuse_busy(conn, "the engine is taking as many uploads as it may; retry shortly")
            return
        end = min(len(conn.buffer), conn.head_end + conn.body_length)  # a streamed body: what came so far
        conn.head, conn.body = bytes(conn.buffer[: conn.head_end]), bytes(conn.buffer[conn.head_end : end])
        del conn.buffer[:end]
        conn.state = BUSY
        self._streams += conn.streamed
        self._selector.unregister(conn.sock)
        self._ready.put(conn)

    def _refuse_busy(self, conn: Connection, message: str) -> None:
        self._refused_busy += 1
        refusal = Refusal(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailable", message)
        self._refuse(conn, refusal, retry_after=1)

    def _refuse(self, conn: Connection, refusal: Refusal, retry_after: int | None = None) -> None:
        """Answers without a thread, then lingers (`_linger`)."""
        LOG.debug("%s: %s %s", conn.address, refusal.status.value, refusal.message)
        with contextlib.suppress(OSError):
            conn.sock.send(answer_bytes(refusal, retry_after))
        self._linger(conn)

    def _linger(self, conn: Connection) -> None:
        """After an answer that ends the connection with input unread: drains what the client still sends
        before closing, so it reads the answer instead of a reset."""
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_WR)
        conn.buffer.clear()
        conn.state, conn.deadline = LINGER, time.monotonic() + LINGER_SECONDS

    def _take_returned(self) -> None:
        """Connections whose answer a worker has written: kept alive, or closed."""
        with contextlib.suppress(queue.Empty):
            while True:
                conn, keep_alive = self._returned.get_nowait()
                self._streams -= conn.streamed
                unread = conn.stream is not None and conn.stream.remaining > 0
                conn.streamed, conn.stream = False, None
                if unread and not self._stop.is_set():  # a streamed body refused before its end
                    self._selector.register(conn.sock, selectors.EVENT_READ, conn)
                    self._linger(conn)
                    continue
                if not keep_alive or self._stop.is_set():
                    self._close(conn)
                    continue
                conn.state = HEAD if conn.buffer else IDLE
                timeout = self.limits.header_timeout if conn.buffer else self.limits.idle_timeout
                conn.deadline = time.monotonic() + timeout
                self._selector.register(conn.sock, selectors.EVENT_READ, conn)
                if conn.buffer:  # a pipelined request arrived with the previous one
                    self._advance(conn)

    def _expire(self, now: float) -> None:
        if self._resume_at is not None and now >= self._resume_at:
            self._resume_accepting()
        for conn in [c for c in self._open if c.state != BUSY and c.deadline <= now]:
            if conn.state in (NEW, HEAD, BODY):
                self._timed_out += 1
            if conn.state in (HEAD, BODY):  # part of a request came: say why it ends
                refusal = Refusal(HTTPStatus.REQUEST_TIMEOUT, "RequestTimeout", "the request was too slow")
                self._refuse(conn, refusal)
            else:  # nothing was asked (new, idle) or the linger after a refusal is over: close quietly
                self._drop(conn, f"closed ({conn.state})")

    def _drop(self, conn: Connection, why: str) -> None:
        LOG.debug("%s: %s", conn.address, why)
        self._close(conn)

    def _close(self, conn: Connection) -> None:
        if conn.state != BUSY:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(conn.sock)
        _close_socket(conn.sock)
        self._open.discard(conn)
        if len(self._open) < self.limits.max_connections:
            self._resume_accepting()

    def _close_reactor_connections(self) -> None:
        for conn in [c for c in self._open if c.state != BUSY]:
            self._close(conn)
        self._pause_accepting()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(self._wake_r)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- workers -------------------------------------------------------------------------------------
    def _start_workers(self) -> None:
        while len(self._workers) < self.limits.threads:
            worker = threading.Thread(
                target=self._work, name=f"segflow-http-{len(self._workers)}", daemon=True
            )
            worker.start()
            self._workers.append(worker)

    def _work(self) -> None:
        while (conn := self._ready.get()) is not None:
            with self._lock:
                self._busy += 1
            keep_alive = False
            try:
                keep_alive = self._answer(conn)
            finally:
                with self._lock:
                    self._busy -= 1
                self._returned.put((conn, keep_alive))
                self._wake()

    def _answer(self, conn: Connection) -> bool:
        """Runs the handler on the connection's request; whether the connection may serve another."""
        try:
            conn.sock.settimeout(self.limits.write_timeout)
            if conn.streamed:
                conn.stream = BodyStream(
                    conn.sock,
                    conn.body,
                    conn.body_length,
                    read_timeout=self.limits.stream_read_timeout,
                    deadline=time.monotonic() + self.limits.stream_timeout,
                    expect_continue=conn.expect_continue,
                )
            handler = self.handler_class(conn, conn.address, self)  # type: ignore[arg-type]
        except Exception as exc:
            if client_went_away(exc):
                LOG.debug("%s: went away while answered (%s)", conn.address, type(exc).__name__)
            else:
                LOG.exception("unexpected failure answering %s", conn.address)
            return False
        finally:
            conn.head = conn.body = b""
            with contextlib.suppress(OSError):
                conn.sock.setblocking(False)  # back to the reactor (kept, lingering or closed)
        return not handler.close_connection


def _within_file_limit(limits: ServerLimits) -> ServerLimits:
    """At most half the process's file-descriptor limit (models, inputs and results need the rest), so
    accepting never runs out of descriptors in the first place (macOS's default limit is 256)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # not on Unix
        return limits
    if soft == resource.RLIM_INFINITY or limits.max_connections <= soft // 2:
        return limits
    LOG.info("max_connections %d lowered to %d (open-file limit %d)", limits.max_connections, soft // 2, soft)
    return replace(limits, max_connections=max(1, soft // 2))


def _close_socket(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
