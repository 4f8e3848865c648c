"""The engine connects only to the host its check saw, beyond loopback only to public addresses (issue 15 §3).

GIVEN the real `segflow engine` (a child process, on 127.0.0.1) and loopback servers: input files, a
      redirector, and a "neighbour" service on 127.0.0.2 the engine must never reach
WHEN  it is asked for inputs whose URL reads two ways (the issue's `http://127.0.0.2:8000\\@127.0.0.1:9000/`),
      through redirect chains, by a name that resolves to loopback with `--refuse-private-inputs`, and
      through a name whose address changes between two lookups
THEN  a URL that reads two ways is refused `InvalidImage.URL` (as a first URL) or `.Download` (as a
      redirect) and the neighbour is never contacted; a chain on the caller's host is followed; with the
      option on, loopback is refused whatever the name says, except an `--allow-input-host`; and a download
      connects to the address it checked, never to one a second lookup gives.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.engine_server import (
    EngineProcess,
    StubActions,
    call_rpc,
    engine_process,
    make_png,
    start_engine,
)
from tests.support.loopback_http import QuietThreadingHTTPServer, ReplyingHandler

pytestmark = pytest.mark.engine  # the command checks its models are installed (no model runs here)

PHOTO = make_png(40, 30, channels=3)


class _Files(ReplyingHandler):
    """The photo at /photo.png, redirects under /hop-N, /to-<url> redirects to <url> (after `to-`)."""

    protocol_version = "HTTP/1.0"
    seen: list[str]  # set per server by `_serve`

    def do_GET(self) -> None:
        self.seen.append(self.path)
        name = urlsplit(self.path).path.lstrip("/")
        if name == "photo.png":
            self._reply(200, PHOTO)
        elif name.startswith("hop-"):
            left = int(name.split("-")[1])
            self._redirect("/photo.png" if left == 1 else f"/hop-{left - 1}")
        elif name == "to-neighbour-two-ways":  # the issue's Location, the neighbour's port in it
            here = self.server.server_address[1]
            self._redirect(f"http://127.0.0.2:{self.server.neighbour_port}\\@127.0.0.1:{here}/photo.png")
        elif name == "to-other-port":
            self._redirect(f"http://127.0.0.1:{self.server.other_port}/photo.png")
        elif name == "to-rebind":
            self._redirect(f"http://{REBIND_NAME}:{self.server.server_address[1]}/photo.png")
        else:
            self._reply(404, b"")


class _Server:
    def __init__(self, host: str, **attributes: int) -> None:
        self.seen: list[str] = []
        handler = type("Handler", (_Files,), {"seen": self.seen})
        self.httpd = QuietThreadingHTTPServer((host, 0), handler)
        for name, value in attributes.items():
            setattr(self.httpd, name, value)
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def neighbour() -> Iterator[_Server]:
    """A service of this machine on another loopback address: no input may ever reach it."""
    server = _Server("127.0.0.2")
    yield server
    server.close()


@pytest.fixture(scope="module")
def files(neighbour: _Server) -> Iterator[_Server]:
    other = _Server("127.0.0.1")
    server = _Server("127.0.0.1", neighbour_port=neighbour.port, other_port=other.port)
    yield server
    server.close()
    other.close()


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    """`segflow engine` on loopback with its default input rule (not public-only)."""
    with engine_process(tmp_path_factory.mktemp("engine"), "--no-warm-up") as running:
        yield running


def _code(engine: Any, url: str) -> tuple[int, str]:
    response = call_rpc(engine, "SegmentCommonImage", {"ImageURL": url})
    return response.status_code, response.json().get("Code", "")


def test_the_issues_url_is_refused_as_it_reads_two_ways(
    engine: EngineProcess, neighbour: _Server, files: _Server
) -> None:
    url = f"http://127.0.0.2:{neighbour.port}\\@127.0.0.1:{files.port}/photo.png"
    assert _code(engine, url) == (400, "InvalidImage.URL")
    assert neighbour.seen == [] and files.seen == []


def test_a_redirect_that_reads_two_ways_is_not_followed(
    engine: EngineProcess, neighbour: _Server, files: _Server
) -> None:
    assert _code(engine, f"{files.url}/to-neighbour-two-ways") == (400, "InvalidImage.Download")
    assert neighbour.seen == []


def test_a_redirect_chain_on_the_callers_host_is_followed(engine: EngineProcess, files: _Server) -> None:
    status, _ = _code(engine, f"{files.url}/hop-3")
    assert status == 200
    assert [p for p in files.seen if p.startswith("/hop-")][-3:] == ["/hop-3", "/hop-2", "/hop-1"]


def test_a_redirect_to_another_service_of_this_machine_is_refused(
    engine: EngineProcess, files: _Server
) -> None:
    before = len(files.seen)
    assert _code(engine, f"{files.url}/to-other-port") == (400, "InvalidImage.Download")
    assert files.seen[before:] == ["/to-other-port"]  # the other port was never asked


def test_with_the_option_on_loopback_is_refused_by_address_except_an_allowed_host(
    tmp_path: Path, files: _Server
) -> None:
    options = ("--no-warm-up", "--refuse-private-inputs", "--allow-input-host", f"127.0.0.1:{files.port}")
    with engine_process(tmp_path, *options) as strict:
        assert "public addresses only" in strict.banner[-1]
        before = len(files.seen)
        by_name = _code(strict, f"http://localhost:{files.port}/photo.png")  # resolves to 127.0.0.1
        by_address = _code(strict, f"http://127.0.0.2:{files.port}/photo.png")
        asked = files.seen[before:]
        allowed = _code(strict, f"{files.url}/photo.png")
        redirected = _code(strict, f"{files.url}/to-other-port")  # the allowed host sends it elsewhere
    assert by_name == (400, "InvalidImage.Download") and by_address == (400, "InvalidImage.Download")
    assert asked == []  # refused before any connection
    assert allowed[0] == 200
    assert redirected == (400, "InvalidImage.Download")


def test_the_option_is_on_by_default_beyond_loopback() -> None:
    import argparse

    from segflow_engine import command

    def rule(*argv: str) -> tuple[bool, frozenset[str]]:
        parser = argparse.ArgumentParser()
        command.configure_parser(parser)
        made = command.address_rule(parser.parse_args(list(argv)))
        return made.public_only, made.allowed_hosts

    assert rule() == (False, frozenset())
    assert rule("--host", "0.0.0.0") == (True, frozenset())
    assert rule("--host", "0.0.0.0", "--no-refuse-private-inputs") == (False, frozenset())
    assert rule("--host", "::", "--allow-input-host", "OSS-cn-shanghai-internal.aliyuncs.com") == (
        True,
        frozenset({"oss-cn-shanghai-internal.aliyuncs.com"}),
    )


REBIND_NAME = "rebind.segflow.test"
PUBLIC_ADDRESS = "93.184.216.34"  # never connected to: the test refuses the connection before it is made


def test_a_download_connects_to_the_address_it_checked(
    files: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name answers a public address first and loopback afterwards. The download
    resolves once, checks that address and connects to it (refused here, in-process, before any packet
    leaves), so the loopback file server is never asked for the photo."""
    import urllib3.util.connection

    lookups: list[str] = []
    connected: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, urllib3.util.connection.create_connection

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != REBIND_NAME:
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        address = PUBLIC_ADDRESS if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port or 80))]

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        connected.append(address[0])
        if address[0] == PUBLIC_ADDRESS:
            raise ConnectionRefusedError("the test keeps every connection on this machine")
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)
    before = len(files.seen)
    with start_engine(actions=StubActions()) as engine:
        answer = _code(engine, f"{files.url}/to-rebind")
    assert answer == (400, "InvalidImage.Download")
    assert files.seen[before:] == ["/to-rebind"]  # the photo was never fetched from loopback
    assert lookups == [REBIND_NAME]  # one lookup: the address checked is the address connected to
    assert connected[-1] == PUBLIC_ADDRESS
