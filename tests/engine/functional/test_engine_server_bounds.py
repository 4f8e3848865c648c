"""The engine's HTTP side is bounded: bursts are answered, slow or idle clients cost no thread, no traceback.

GIVEN an engine on 127.0.0.1 with stub models (and small timeouts where a test waits for one)
WHEN  30 signed calls arrive at once, 400 clients trickle their request heads, connections sit idle, the
      waiting queue is full, or clients misbehave (chunked bodies, huge heads, resets mid-answer)
THEN  every call is answered (no connection reset), the number of threads never moves, slow clients are
      dropped after their deadline with nothing printed on stderr, and the engine keeps answering.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from segflow_engine.limits import ServerLimits
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


def _wait_until(condition: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(0.01)
    raise AssertionError("condition not met in time")


def _burst(engine: RunningEngine, files: LoopbackFiles, count: int) -> tuple[list[int], list[str]]:
    """`count` signed calls released together, each on its own new connection (as `count` processes
    would); the statuses, and the names of the errors of calls that got no answer."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []
    errors: list[str] = []

    def one() -> None:
        barrier.wait(timeout=10)
        try:
            statuses.append(call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")}).status_code)
        except requests.RequestException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return statuses, errors


@pytest.mark.parametrize("http_threads", [32, 4], ids=["default-pool", "pool-smaller-than-burst"])
def test_thirty_concurrent_signed_calls_are_all_answered_without_a_reset(
    files: LoopbackFiles, http_threads: int
) -> None:
    stub = StubActions()
    gate = stub.hold()  # every call waits at the model, so all 30 are in the engine at once
    limits = ServerLimits(threads=http_threads)
    with start_engine(actions=stub, limits=limits) as engine:
        results: list[tuple[list[int], list[str]]] = []
        burst = threading.Thread(target=lambda: results.append(_burst(engine, files, BURST)))
        burst.start()
        answering = min(BURST, http_threads)  # the rest wait for a thread, in arrival order
        _wait_until(lambda: engine.server.http_stats().busy == answering, 20)
        _wait_until(lambda: engine.server.http_stats().pending == BURST - answering, 20)
        gate.set()
        burst.join(timeout=60)
        statuses, errors = results[0]
        assert errors == []  # no reset, no refused connection
        assert statuses == [200] * BURST
        assert engine.server.http_stats().threads == http_threads + 1  # the pool and the reactor


def test_calls_beyond_the_waiting_queue_are_answered_503_with_retry_after(files: LoopbackFiles) -> None:
    stub = StubActions()
    gate = stub.hold()
    with start_engine(actions=stub, workers=1, limits=ServerLimits(threads=1, max_pending=1)) as engine:
        results: list[tuple[list[int], list[str]]] = []
        first = threading.Thread(target=lambda: results.append(_burst(engine, files, 2)))
        first.start()
        _wait_until(lambda: engine.server.http_stats().pending == 1, 10)
        overflow = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
        gate.set()
        first.join(timeout=30)
    assert overflow.status_code == 503
    assert overflow.headers["Retry-After"] == "1"
    assert overflow.json()["Code"] == "ServiceUnavailable"
    assert results[0] == ([200, 200], [])  # the ones that fitted were answered


def _open_tricklers(port: int, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sockets.append(sock)
    return sockets


def _trickle_round(
    tricklers: dict[socket.socket, int], selector: selectors.BaseSelector, ended: dict[socket.socket, bytes]
) -> None:
    """One more byte of the head from every trickler still open; note the ones the server ended."""
    for sock, sent in list(tricklers.items()):
        try:
            sock.send(TRICKLE_HEAD[sent : sent + 1])
            tricklers[sock] = min(sent + 1, len(TRICKLE_HEAD) - 3)  # never finish the head
        except OSError:
            pass  # ended by the server: seen below
    for key, _ in selector.select(0):
        sock = key.fileobj
        assert isinstance(sock, socket.socket)
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        ended[sock] = ended.get(sock, b"") + data
        selector.unregister(sock)
        tricklers.pop(sock, None)
        sock.close()


def test_four_hundred_trickling_clients_cost_no_thread_and_are_dropped_quietly(
    files: LoopbackFiles, capfd: pytest.CaptureFixture[str]
) -> None:
    limits = ServerLimits(header_timeout=2.0)
    with start_engine(actions=StubActions(), limits=limits) as engine:
        assert call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")}).status_code == 200
        threads_before = threading.active_count()
        sockets = _open_tricklers(engine.port, TRICKLERS)
        selector = selectors.DefaultSelector()
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        tricklers = dict.fromkeys(sockets, 0)
        ended: dict[socket.socket, bytes] = {}
        most_threads, normal_call_seconds = 0, -1.0
        deadline = time.monotonic() + 15
        while tricklers and time.monotonic() < deadline:
            _trickle_round(tricklers, selector, ended)
            most_threads = max(most_threads, threading.active_count())
            if normal_call_seconds < 0 and len(ended) == 0:  # while all 400 are still trickling
                started = time.monotonic()
                response = call_rpc(engine, "SegmentBody", {"ImageURL": files.url("photo.png")})
                assert response.status_code == 200
                normal_call_seconds = time.monotonic() - started
            time.sleep(0.1)
        stats = engine.server.http_stats()
    assert not tricklers, f"{len(tricklers)} trickling clients were never dropped"
    assert 0 <= normal_call_seconds < 2.0  # answered meanwhile, not after the slow clients' deadline
    assert most_threads <= threads_before  # not one thread for 400 connections
    assert stats.timed_out >= TRICKLERS
    assert all(data == b"" or data.startswith(b"HTTP/1.1 408 ") for data in ended.values())
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def _raw_exchange(port: int, payload: bytes, read_seconds: float = 5.0) -> bytes:
    """Sends `payload` on a new connection and returns everything read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_seconds) as sock:
        sock.sendall(payload)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(files: LoopbackFiles) -> None:
    with start_engine(actions=StubActions(), limits=ServerLimits(idle_timeout=0.5)) as engine:
        started = time.monotonic()
        received = _raw_exchange(engine.port, b"GET /results/x/y HTTP/1.1\r\nHost: e\r\n\r\n")
        closed_after = time.monotonic() - started
    assert received.startswith(b"HTTP/1.1 403 ")  # answered (unsigned), kept alive, closed when idle
    assert 0.4 <= closed_after < 3.0


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
        (b"POST / HTTP/1.1\r\nHost: e\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", b"411"),
        (b"GET / HTTP/1.1\r\nHost: e\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\n\r\n", b"431"),
        (b"POST / HTTP/1.1\r\nHost: e\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", b"400"),
    ],
    ids=["chunked-body", "head-over-64-kib", "two-content-lengths"],
)
def test_requests_that_cannot_be_framed_are_refused_and_closed(
    engine_quiet: RunningEngine, payload: bytes, status: bytes
) -> None:
    assert _raw_exchange(engine_quiet.port, payload).startswith(b"HTTP/1.1 " + status + b" ")


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
