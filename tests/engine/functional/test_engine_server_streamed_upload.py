"""The temporary bucket's uploads are received by the server before a thread takes them, within bounds.

GIVEN an engine on 127.0.0.1 (stub models) behind waitress, which reads each body whole on its I/O thread
      (into a temporary file beyond `ServerLimits.spool_bytes`) before the application sees it
WHEN  uploads arrive while others are still being sent, stop arriving, wait for `100 Continue`, declare more
      than any limit, come chunked, or are followed by another request on the same connection
THEN  an upload being received holds no thread (the one thread answers other requests meanwhile), one that
      stops arriving is dropped after the idle timeout and nothing is kept, a body over every limit is never
      stored, and a complete upload leaves its connection usable for the next request.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
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


def test_an_upload_being_received_holds_no_thread(capfd: pytest.CaptureFixture[str]) -> None:
    with start_engine(actions=StubActions(), limits=ServerLimits(threads=1)) as engine:
        temp = engine.server.engine.temp_bucket
        key, content_type, body = _form(temp)
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as slow:
            slow.sendall(
                _head(engine, content_type, len(body), "Connection: close\r\n") + body[: len(body) // 2]
            )
            time.sleep(0.2)
            other = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)  # the one thread
            another = _upload(engine)
            slow.sendall(body[len(body) // 2 :])
            answer = _read_to_close(slow)
        stored = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)
    assert other.status_code == 404  # answered while the upload is still arriving
    assert another.startswith(b"HTTP/1.1 201 ")  # and so is a second upload
    assert answer.startswith(b"HTTP/1.1 201 ") and f"<Key>{key}</Key>".encode() in answer
    assert stored.content == FILE
    assert "Traceback" not in capfd.readouterr().err


def test_an_upload_that_stops_arriving_is_dropped_after_the_idle_timeout_and_not_kept(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with start_engine(actions=StubActions(), limits=ServerLimits(idle_timeout=1)) as engine:
        key, content_type, body = _form(engine.server.engine.temp_bucket)
        with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
            sock.sendall(_head(engine, content_type, len(body)) + body[: len(body) // 2])
            started = time.monotonic()
            answer = _read_to_close(sock)
            dropped_after = time.monotonic() - started
        stored = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)
        leftovers = _leftovers(engine)
    assert answer == b"" and dropped_after < 5.0  # closed, the half-sent request never reached a thread
    assert stored.status_code == 404 and leftovers == []
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err


def test_100_continue_is_said_to_an_upload_and_a_body_over_every_limit_is_never_stored() -> None:
    """A declared body over `ServerLimits.max_body_bytes` is answered 413 before it is read. With
    `Expect: 100-continue` waitress says `100 Continue` first (as several servers do) and counts what
    comes against the same limit: the sender is dropped once silent, or refused at the limit, and
    nothing is kept."""
    with start_engine(actions=StubActions(), limits=ServerLimits(idle_timeout=1)) as engine:
        _continue_and_refusals(engine)


def _continue_and_refusals(engine: RunningEngine) -> None:
    key, content_type, body = _form(engine.server.engine.temp_bucket)
    expect = "Expect: 100-continue\r\nConnection: close\r\n"
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, len(body), expect))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        accepted = _read_to_close(sock)
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, 5_000_000_000, "Connection: close\r\n"))
        refused = _read_to_close(sock)
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(_head(engine, content_type, 5_000_000_000, expect))
        assert sock.recv(64) == b"HTTP/1.1 100 Continue\r\n\r\n"
        with contextlib.suppress(OSError):
            sock.sendall(body)
        after_continue = _read_to_close(sock)
    assert accepted.startswith(b"HTTP/1.1 201 ") and f"<Key>{key}</Key>".encode() in accepted
    assert refused.startswith(b"HTTP/1.1 413 ")
    assert b" 201 " not in after_continue
    assert _leftovers(engine) == []


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


def test_a_chunked_upload_is_received_like_any_other(engine: RunningEngine) -> None:
    """waitress reads a chunked body whole (its length is then known): the PostObject is taken."""
    key, content_type, body = _form(engine.server.engine.temp_bucket)
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 65536]), body[i : i + 65536]) for i in range(0, len(body), 65536)
    )
    head = (
        f"POST /{TEMP_BUCKET}/ HTTP/1.1\r\nHost: {engine.endpoint}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", engine.port), timeout=10) as sock:
        sock.sendall(head.encode() + chunks + b"0\r\n\r\n")
        answer = _read_to_close(sock)
    stored = requests.get(f"{engine.base_url}/{TEMP_BUCKET}/{key}", timeout=10)
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert stored.content == FILE
