"""The temporary bucket's uploads are streamed by the bounded server: a thread reads them, within bounds.

GIVEN an engine on 127.0.0.1 (stub models) whose HTTP side streams the body of `POST /viapi-customer-temp/`
      to the temporary bucket instead of reading it into memory (see `segflow_engine.httpd`)
WHEN  uploads arrive while others are still being read, stall or trickle, wait for `100 Continue`, or are
      followed by another request on the same connection
THEN  at most half the pool reads uploads at once (a further one is told 503 + Retry-After, as a busy OSS
      endpoint answers a retryable 503), the rest of the pool keeps answering, a body that stops arriving
      in time is answered OSS's 400 `RequestTimeout` (OSS error codes: "RequestTimeout") and nothing is
      kept, `100 Continue` is only said to a body the engine will read, and a complete upload leaves its
      connection usable for the next request.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from segflow.tempupload import MultipartBody, UploadGrant, form_fields, temp_address
from segflow_engine.limits import ServerLimits
from segflow_engine.tempstore import TEMP_BUCKET, TempBucket
from tests.support.engine_server import RunningEngine, StubActions, start_engine

FILE = bytes(range(256)) * 1024  # 256 KiB: more than the reactor reads before it hands the upload over


def _form(temp: TempBucket, data: bytes = FILE) -> tuple[str, str, bytes]:
    """(object key, content type, body) of a valid PostObject for a fresh grant."""
    grant = UploadGrant.from_document({"RequestId": "R", **temp.grant("imageseg")})
    body = MultipartBody(
        form_fields(grant, temp_address(grant, "http")), grant.object_key, iter([data]), len(data)
    )
    content = b"".join(iter(lambda: body.read(65536), b""))
    return grant.object_key, body.content_type, content


def _head(engine: RunningEngine, content_type: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST /{TEMP_BUCKET}/ HTTP/1.1\r\nHost: {engine.endpoint}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _read_to_close(sock: socket.socket) -> bytes:
    received = b""
    while block := sock.recv(65536):
        received += block
    return received


def _wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def _upload(engine: RunningEngine, extra: str = "Connection: close\r\n") -> bytes:
    _, content_type, body = _form(engine.server.engine.temp_bucket)
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, len(body), extra) + body)
        return _read_to_close(sock)


def _leftovers(engine: RunningEngine) -> list[Path]:
    """Partial upload files the temporary bucket did not clean up."""
    return list(engine.server.engine.temp_bucket.root.glob(".upload-*"))


@pytest.fixture(scope="module")
def engine() -> Iterator[RunningEngine]:
    with start_engine(actions=StubActions()) as running:
        yield running


def test_uploads_take_at_most_half_the_pool_and_the_next_is_told_to_retry(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with start_engine(actions=StubActions(), limits=ServerLimits(threads=2)) as engine:  # one upload slot
        temp = engine.server.engine.temp_bucket
        key, content_type, body = _form(temp)
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as slow:
            slow.sendall(
                _head(engine, content_type, len(body), "Connection: close\r\n") + body[: len(body) // 2]
            )
            _wait_until(lambda: engine.server.http_stats().streams == 1)

            refused = _upload(engine)
            other = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)

            slow.sendall(body[len(body) // 2 :])
            answer = _read_to_close(slow)
        _wait_until(lambda: engine.server.http_stats().streams == 0)
        after = _upload(engine)
        stored = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)
    assert refused.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1\r\n" in refused
    assert b'"ServiceUnavailable"' in refused
    assert other.status_code == 404  # the pool's other thread answers while the upload is read
    assert answer.startswith(b"HTTP/1.1 201 ") and f"<Key>{key}</Key>".encode() in answer
    assert after.startswith(b"HTTP/1.1 201 ")  # the slot is free again
    assert stored.content == FILE
    assert "Traceback" not in capfd.readouterr().err


def _stall_or_trickle(sock: socket.socket, rest: bytes, trickle: bool, seconds: float) -> bytes:
    """Sends nothing more (a stall) or one byte of `rest` every 50 ms (a trickle) until the engine
    answers; everything it sends until it closes the connection."""
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    deadline, sent = time.monotonic() + seconds, 0
    while time.monotonic() < deadline and not selector.select(0.05):
        if trickle and sent < len(rest):
            sock.sendall(rest[sent : sent + 1])
            sent += 1
    selector.close()
    return _read_to_close(sock)


@pytest.mark.parametrize(
    ("limits", "trickle"),
    [
        (ServerLimits(stream_read_timeout=0.5), False),
        (ServerLimits(stream_read_timeout=5.0, stream_timeout=1.0), True),
    ],
    ids=["silent-past-the-read-timeout", "trickling-past-the-body-deadline"],
)
def test_an_upload_that_does_not_arrive_in_time_is_answered_request_timeout_and_not_kept(
    limits: ServerLimits, trickle: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    with start_engine(actions=StubActions(), limits=limits) as engine:
        key, content_type, body = _form(engine.server.engine.temp_bucket)
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
            sock.sendall(_head(engine, content_type, len(body)) + body[: len(body) // 2])
            answer = _stall_or_trickle(sock, body[len(body) // 2 :], trickle, seconds=8)
        stored = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)
        _wait_until(lambda: engine.server.http_stats().streams == 0)
        leftovers = _leftovers(engine)
    assert answer.startswith(b"HTTP/1.1 400 ") and b"<Code>RequestTimeout</Code>" in answer
    assert b"Connection: close\r\n" in answer
    assert stored.status_code == 404 and leftovers == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def test_100_continue_is_said_only_to_an_upload_the_engine_reads(engine: RunningEngine) -> None:
    key, content_type, body = _form(engine.server.engine.temp_bucket)
    expect = "Expect: 100-continue\r\nConnection: close\r\n"
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, len(body), expect))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        accepted = _read_to_close(sock)
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, 5_000_000_000, expect))
        refused = _read_to_close(sock)
    assert accepted.startswith(b"HTTP/1.1 201 ") and f"<Key>{key}</Key>".encode() in accepted
    assert refused.startswith(b"HTTP/1.1 400 ") and b"EntityTooLarge" in refused  # no 100 before it


def test_a_complete_upload_leaves_the_connection_ready_for_the_next_request(engine: RunningEngine) -> None:
    """The stream reads exactly its body: a request sent right behind it is answered next, in order."""
    key, content_type, body = _form(engine.server.engine.temp_bucket)
    fetch = f"GET /{TEMP_BUCKET}/{key} HTTP/1.1\r\nHost: {engine.endpoint}\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, len(body)) + body + fetch.encode())
        received = _read_to_close(sock)
    first, _, second = received.partition(b"</PostResponse>")
    assert first.startswith(b"HTTP/1.1 201 ")
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(FILE)


def test_a_chunked_upload_is_refused_like_any_chunked_body(engine: RunningEngine) -> None:
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(
            f"POST /{TEMP_BUCKET}/ HTTP/1.1\r\nHost: {engine.endpoint}\r\nTransfer-Encoding: chunked\r\n\r\n"
            "5\r\nhello\r\n0\r\n\r\n".encode()
        )
        assert _read_to_close(sock).startswith(b"HTTP/1.1 411 ")
