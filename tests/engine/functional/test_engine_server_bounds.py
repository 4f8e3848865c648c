"""The engine's HTTP side is bounded: bursts are answered, slow or idle clients cost no thread, no traceback.

The server is waitress (shared/ARCHITECTURE.md, "The HTTP server"): it reads each request whole on its one
I/O thread before one of `ServerLimits.threads` threads answers it, and sends answers from that I/O thread.

GIVEN an engine on 127.0.0.1 with stub models (and small limits where a test waits for one)
WHEN  30 signed calls arrive at once, more connections than allowed arrive, 400 clients trickle their
      request heads, connections sit idle, a client reads nothing of a large answer, or clients misbehave
      (chunked bodies, huge heads, oversized bodies, resets mid-answer)
THEN  every call is answered (no connection reset), no thread is ever added, connections beyond the limit
      wait in the backlog, silent clients are dropped after the idle timeout with nothing on stderr, and
      the engine keeps answering.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from segflow.tempupload import MultipartBody, UploadGrant, form_fields, temp_address
from segflow_engine.limits import ServerLimits
from segflow_engine.tempstore import TEMP_BUCKET
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_png,
    serve_files,
    start_engine,
)

BURST = 30
TRICKLERS = 400
TRICKLE_HEAD = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"z" * 64 + b"\r\n\r\n"


@pytest.fixture(scope="module")
def files() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": make_png(32, 24, channels=3)}) as served:
        yield served


def _wait_until(condition: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


class _Burst:
    """`count` signed calls released together, each on its own new connection (as `count` processes would),
    on threads of their own; `statuses` and the errors of calls that got no answer."""

    def __init__(self, engine: RunningEngine, files: LoopbackFiles, count: int) -> None:
        self.statuses: list[int] = []
        self.errors: list[str] = []
        barrier = threading.Barrier(count)

        def one() -> None:
            barrier.wait(timeout=10)
            try:
                response = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
                self.statuses.append(response.status_code)
            except requests.RequestException as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")

        self.threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=60)


@pytest.mark.parametrize("http_threads", [32, 4], ids=["default-pool", "pool-smaller-than-burst"])
def test_thirty_concurrent_signed_calls_are_all_answered_without_a_reset(
    files: LoopbackFiles, http_threads: int
) -> None:
    stub = StubActions()
    gate = stub.hold()  # every call waits at the model, so all 30 are in the engine at once
    with start_engine(actions=stub, limits=ServerLimits(threads=http_threads)) as engine:
        engine_threads = set(threading.enumerate())
        burst = _Burst(engine, files, BURST)
        _wait_until(lambda: engine.server.open_connections == BURST, 20)  # accepted, none refused
        _wait_until(stub.started.is_set, 20)
        added = set(threading.enumerate()) - engine_threads - set(burst.threads)
        # Besides the test's own: the model workers (at most `workers`, started on first use) and the
        # threads of the test's input file server. The HTTP side's must not be among them.
        http_added = {
            t.name
            for t in added
            if not t.name.startswith("segflow-engine-worker") and "process_request_thread" not in t.name
        }
        gate.set()
        burst.join()
    assert burst.errors == []  # no reset, no refused connection
    assert burst.statuses == [200] * BURST
    assert http_added == set()  # the HTTP side's threads are the same before and during the burst


def test_connections_beyond_the_limit_wait_in_the_backlog_and_are_all_answered(files: LoopbackFiles) -> None:
    stub = StubActions()
    gate = stub.hold()
    limits = ServerLimits(threads=2, max_connections=4)
    with start_engine(actions=stub, workers=1, limits=limits) as engine:
        burst = _Burst(engine, files, 10)
        _wait_until(lambda: engine.server.open_connections == 4, 10)
        most = 0
        for _ in range(50):  # while the gate holds every call, for half a second
            most = max(most, engine.server.open_connections)
            time.sleep(0.01)
        gate.set()
        burst.join()
    assert most == 4  # the rest waited in the kernel's accept queue
    assert (burst.statuses, burst.errors) == ([200] * 10, [])


def _open_tricklers(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _ended_by_the_server(selector: selectors.BaseSelector, ended: dict[socket.socket, bytes]) -> None:
    """Note (and close) the connections the server has ended: what each received before its end."""
    for key, _ in selector.select(0):
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        ended[sock] = ended.get(sock, b"") + data
        selector.unregister(sock)
        sock.close()


def test_four_hundred_trickling_clients_hold_no_thread_and_are_dropped_once_silent(
    files: LoopbackFiles, capfd: pytest.CaptureFixture[str]
) -> None:
    """A trickling head costs a connection (waitress buffers it on its I/O thread), not a thread; a
    client that goes silent is dropped after the idle timeout, quietly."""
    with start_engine(actions=StubActions(), limits=ServerLimits(idle_timeout=2)) as engine:
        assert call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")}).status_code == 200
        threads_before = threading.active_count()
        sockets = _open_tricklers(engine.port, TRICKLERS)
        selector = selectors.DefaultSelector()
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        ended: dict[socket.socket, bytes] = {}
        most_threads, normal_call_seconds = 0, -1.0
        for sent in range(30):  # one more byte of the head from each, every 100 ms, for 3 s
            for sock in sockets:
                if sock not in ended:
                    sock.send(TRICKLE_HEAD[sent : sent + 1])
            _ended_by_the_server(selector, ended)
            most_threads = max(most_threads, threading.active_count())
            if sent == 10:  # while all 400 trickle
                started = time.monotonic()
                response = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
                assert response.status_code == 200
                normal_call_seconds = time.monotonic() - started
            time.sleep(0.1)
        still_trickling = TRICKLERS - len(ended)
        deadline = time.monotonic() + 10  # silent now: the idle timeout (2 s) and its sweep (1 s) end them
        while len(ended) < TRICKLERS and time.monotonic() < deadline:
            _ended_by_the_server(selector, ended)
            time.sleep(0.05)
    assert still_trickling == TRICKLERS  # none dropped while it kept sending
    assert 0 <= normal_call_seconds < 2.0  # answered meanwhile
    assert most_threads <= threads_before  # not one thread for 400 connections
    assert len(ended) == TRICKLERS, f"{TRICKLERS - len(ended)} silent clients were never dropped"
    assert all(data == b"" for data in ended.values())  # closed, nothing said to a half-sent request
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def _raw_exchange(port: int, payload: bytes, read_seconds: float = 5.0) -> bytes:
    """Sends `payload` on a new connection and returns everything read until the server closes it (a
    reset after the answer ends it too)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_seconds) as sock:
        sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        return received


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(files: LoopbackFiles) -> None:
    with start_engine(actions=StubActions(), limits=ServerLimits(idle_timeout=1)) as engine:
        started = time.monotonic()
        received = _raw_exchange(engine.port, b"GET /results/x/y HTTP/1.1\r\nHost: e\r\n\r\n")
        closed_after = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 403 ")  # answered (unsigned), kept alive, closed when idle
    assert 0.9 <= closed_after < 4.0  # the timeout, plus at most its sweep and waitress's loop wake-up


def _upload(engine: RunningEngine, data: bytes) -> str:
    """`data` put in the engine's temporary bucket (a granted form upload); its URL."""
    grant = UploadGrant.from_document(
        {"RequestId": "R", **engine.server.engine.temp_bucket.grant("imageseg")}
    )
    body = MultipartBody(
        form_fields(grant, temp_address(grant, "http")), grant.object_key, iter([data]), len(data)
    )
    content = b"".join(iter(lambda: body.read(65536), b""))
    url = f"{engine.base_url}/{TEMP_BUCKET}/"
    answer = requests.post(url, data=content, headers={"Content-Type": body.content_type}, timeout=10)
    assert answer.status_code == 201, answer.text
    return f"{url}{grant.object_key}"


def test_a_client_that_reads_nothing_of_a_large_answer_holds_no_thread(files: LoopbackFiles) -> None:
    """Answers are sent by waitress's I/O thread (a file as `wsgi.file_wrapper`): with one thread, a
    client that never reads a 3 MB answer does not stop the next call."""
    with start_engine(actions=StubActions(), limits=ServerLimits(threads=1, idle_timeout=2)) as engine:
        url = _upload(engine, bytes(3 * 1024 * 1024))
        path = url.split(engine.endpoint, 1)[1]
        with socket.create_connection(("127.0.0.1", engine.port), timeout=5) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(f"GET {path} HTTP/1.1\r\nHost: e\r\n\r\n".encode())
            time.sleep(0.3)
            started = time.monotonic()
            response = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
            seconds = time.monotonic() - started
    assert response.status_code == 200 and seconds < 2.0


def test_pipelined_requests_are_answered_in_order(engine_quiet: RunningEngine) -> None:
    request = b"GET /results/x/y HTTP/1.1\r\nHost: e\r\n\r\n"
    received = _raw_exchange(engine_quiet.port, request * 2 + b"GET /x HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert received.count(b"HTTP/1.1 403 ") == 2  # result URLs must be signed
    assert received.count(b"HTTP/1.1 ") == 3


def test_expect_100_continue_is_honoured_before_the_body(engine_quiet: RunningEngine) -> None:
    body = b"Action=SegmentBody&Version=2019-12-30"
    head = (
        b"POST / HTTP/1.1\r\nHost: e\r\nConnection: close\r\nExpect: 100-continue\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", engine_quiet.port), timeout=5) as sock:
        sock.sendall(head)
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400 ")  # reached the engine: unsigned, so refused by it


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: e\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", b"431"),
        (b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", b"400"),
        (b"POST / HTTP/1.1\r\nConnection: close\r\nContent-Length: 2000000\r\n\r\n" + b"a" * 2000000, b"413"),
        (b"POST /x HTTP/1.1\r\nHost: e\r\nContent-Length: %d\r\n\r\n" % (2 * 1024**3), b"413"),
    ],
    ids=[
        "head-over-64-kib",
        "two-content-lengths",
        "call-body-over-1-mib",
        "any-body-over-the-largest-upload",
    ],
)
def test_requests_over_a_limit_or_that_cannot_be_framed_are_refused_and_closed(
    engine_quiet: RunningEngine, payload: bytes, status: bytes
) -> None:
    """A head over 64 KiB may be refused before the client has sent it all: the answer can then come
    with a reset (waitress closes with the rest unread), and some clients see only the reset."""
    received = _raw_exchange(engine_quiet.port, payload)
    if status == b"431" and received == b"":
        return  # refused while still being sent: the reset came first
    assert received.split(b" ", 2)[1] == status


def test_a_chunked_body_is_read_and_answered(engine_quiet: RunningEngine) -> None:
    """waitress reads a chunked body (into a file beyond the spool size): it reaches the engine."""
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (b"Action=SegmentBody&Version=", b"2019-12-30"))
    payload = (
        b"POST / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    received = _raw_exchange(engine_quiet.port, payload)
    assert received.startswith(b"HTTP/1.1 400 ") and b'"RequestId"' in received  # the engine refused it


def test_clients_that_vanish_leave_no_traceback_and_the_engine_answers_on(
    engine_quiet: RunningEngine, files: LoopbackFiles, capfd: pytest.CaptureFixture[str]
) -> None:
    for payload in (b"GET /results/x/y HTTP/1.1\r\nHost: e\r\n\r\n", b"GET / HTT", b"POST / HTTP/1.1\r\n"):
        sock = socket.create_connection(("127.0.0.1", engine_quiet.port), timeout=5)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.sendall(payload)
        sock.close()  # a reset, before or while the engine answers
    time.sleep(0.3)
    response = call_rpc(engine_quiet, "SegmentBody", {"ImageURL": files.url("photo.png")})
    assert response.status_code == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


@pytest.fixture(scope="module")
def engine_quiet() -> Iterator[RunningEngine]:
    with start_engine(actions=StubActions()) as running:
        yield running
