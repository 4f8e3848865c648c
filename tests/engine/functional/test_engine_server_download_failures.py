"""A download failure tells the caller nothing about the network behind the engine; redirects obey one rule.

GIVEN an engine (stub models, short download timeouts) and loopback servers that refuse, reset, close,
      stall, answer errors or redirect
WHEN  the engine is asked to segment an input there
THEN  every failure on the wire is the same `InvalidImage.Download` with the same message (so an engine
      reachable by others is no port scanner), a redirect may stay on the first URL's host but never go to
      another host of this machine or its network, and at most three redirects are followed.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from segflow.catalogue import get_action
from segflow.errors import InputValidationError
from segflow_engine.fetch import FetchPolicy, fetch_bytes
from tests.support.engine_server import (
    LoopbackFiles,
    RunningEngine,
    StubActions,
    call_rpc,
    make_png,
    serve_files,
    start_engine,
)
from tests.support.loopback_http import LoopbackServer, ReplyingHandler

PHOTO = make_png(40, 30, channels=3)
# Short bounds so the stalled and refused cases end quickly (the defaults are 5 s / 10 s / 30 s).
POLICY = FetchPolicy(connect_timeout=1.0, read_timeout=0.5, total_timeout=3.0)
NO_SUCH_HOST = "no-such-host.invalid"  # RFC 6761: .invalid never exists


class _Trap(ReplyingHandler):
    """Misbehaves according to its path. `other` is the port of a second, well-behaved file server."""

    protocol_version = "HTTP/1.0"  # one request per connection: the client never reuses one it closed
    other_port = 0
    released = threading.Event()
    seen: list[str] = []  # noqa: RUF012  (one server per module)

    def do_GET(self) -> None:
        self.seen.append(self.path)
        name = urlsplit(self.path).path.strip("/")
        if name == "photo.png":
            self._reply(200, PHOTO)
        elif name in ("missing", "broken"):
            self._reply(404 if name == "missing" else 500, b"")
        elif name == "reset":  # a TCP reset instead of an answer
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        elif name == "close":  # the connection closed without an answer
            self.connection.shutdown(socket.SHUT_RDWR)
        elif name == "stall":  # headers never come
            self.released.wait(timeout=5)
        elif name.startswith("hops-"):
            left = int(name.split("-")[1])
            self._redirect("/photo.png" if left == 1 else f"/hops-{left - 1}")
        elif name == "to-same-host":
            self._redirect("/photo.png")
        elif name == "to-other-port":
            self._redirect(f"http://127.0.0.1:{self.other_port}/photo.png")
        elif name == "to-localhost-name":
            self._redirect(f"http://localhost:{self.server.server_address[1]}/photo.png")


@pytest.fixture(scope="module")
def other() -> Iterator[LoopbackFiles]:
    with serve_files({"photo.png": PHOTO}) as served:
        yield served


@pytest.fixture(scope="module")
def trap(other: LoopbackFiles) -> Iterator[str]:
    _Trap.other_port = int(other.base_url.rsplit(":", 1)[1])
    with LoopbackServer(_Trap) as server:
        yield server.base_url
        _Trap.released.set()


@pytest.fixture(scope="module")
def engine() -> Iterator[RunningEngine]:
    with start_engine(actions=StubActions(), image_policy=POLICY) as running:
        yield running


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _resolver_without(missing: str) -> Any:
    """`socket.getaddrinfo` answering EAI_NONAME ("name or service not known", what POSIX getaddrinfo
    returns for a name that does not exist) for `missing`: the test asks no DNS server."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == missing:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    return getaddrinfo


def _answer(engine: RunningEngine, url: str) -> tuple[int, str, str]:
    response = call_rpc(engine, "SegmentBody", {"ImageURL": url})
    body = response.json()
    return response.status_code, body.get("Code", ""), body.get("Message", "")


@pytest.mark.parametrize(
    "case",
    [
        "reset",
        "close",
        "stall",
        "missing",
        "broken",
        "no-such-host",
        "to-other-port",
        "to-localhost-name",
        "hops-4",
    ],
)
def test_every_download_failure_reads_the_same_whatever_happened_on_the_wire(
    engine: RunningEngine, trap: str, closed_port: int, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = _answer(engine, f"http://127.0.0.1:{closed_port}/photo.png")
    url = f"{trap}/{case}"
    if case == "no-such-host":
        url = f"http://{NO_SUCH_HOST}/photo.png"
        monkeypatch.setattr(socket, "getaddrinfo", _resolver_without(NO_SUCH_HOST))
    assert refused[:2] == (400, "InvalidImage.Download")
    assert _answer(engine, url) == refused


@pytest.mark.parametrize("case", ["to-other-port", "to-localhost-name"])
def test_redirect_to_another_local_host_is_refused_before_reaching_it(
    engine: RunningEngine, trap: str, other: LoopbackFiles, case: str
) -> None:
    """The target serves a good picture: only the rule can stop the engine from fetching it."""
    other.requests.clear()
    before = list(_Trap.seen)
    assert _answer(engine, f"{trap}/{case}")[1] == "InvalidImage.Download"
    assert other.requests == []  # 127.0.0.1:<other port> was never asked
    assert _Trap.seen[len(before) :] == [f"/{case}"]  # nor the same server under the name localhost


@pytest.mark.parametrize("case", ["to-same-host", "hops-3"])
def test_redirects_on_the_first_host_are_followed_up_to_three(
    engine: RunningEngine, trap: str, case: str
) -> None:
    assert _answer(engine, f"{trap}/{case}")[0] == 200


def test_the_reason_goes_to_the_debug_log_without_the_query(
    trap: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`segflow engine --log-level debug` says what happened; a presigned URL's signature stays out."""
    caplog.set_level(logging.DEBUG, logger="segflow_engine.fetch")
    with pytest.raises(InputValidationError):
        fetch_bytes(get_action("SegmentBody"), f"{trap}/missing?Expires=1&Signature=s3cr3t", POLICY)
    logged = [r.getMessage() for r in caplog.records if r.name == "segflow_engine.fetch"]
    assert logged == [f"download from {trap}/missing failed: HTTP 404"]
