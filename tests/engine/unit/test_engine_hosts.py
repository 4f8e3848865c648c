"""The engine's one host rule (segflow_engine.hosts) and the redirect rule on it (fetch.redirect_allowed).

Literal addresses only: nothing here resolves a name or opens a socket.
"""

from __future__ import annotations

import pytest

from segflow_engine.fetch import redirect_allowed
from segflow_engine.hosts import is_loopback, is_public


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST.",
        "app.localhost",
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "[::1]",
        "::ffff:127.0.0.1",
    ],
)
def test_loopback_names_and_addresses_are_loopback(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.1", "192.168.1.2", "example.com", ""])
def test_wildcard_private_and_other_hosts_are_not_loopback(host: str) -> None:
    """0.0.0.0 listens on every interface: binding it is not loopback (`segflow engine` warns)."""
    assert not is_loopback(host)


@pytest.mark.parametrize("host", ["8.8.8.8", "[2606:4700:4700::1111]", "2606:4700:4700::1111"])
def test_public_addresses_are_public(host: str) -> None:
    assert is_public(host)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",  # connecting to it reaches this machine
        "::",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.10",
        "169.254.169.254",  # the cloud metadata service
        "100.64.0.1",  # shared CGNAT space
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "224.0.0.1",
        "",
    ],
)
def test_machine_private_and_special_addresses_are_not_public(host: str) -> None:
    assert not is_public(host)


@pytest.mark.parametrize(
    ("first", "following", "allowed"),
    [
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b", True),  # the host the caller chose
        ("http://127.0.0.1:8000/a", "/b", False),  # not absolute: fetch joins it first
        ("http://Files.Local:80/a", "http://files.local/b", True),  # same name and port, spelled apart
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:8001/b", False),  # another service of this machine
        ("http://127.0.0.1:8000/a", "http://localhost:8000/b", False),  # another name
        ("http://8.8.8.8/a", "http://169.254.169.254/latest/meta-data/", False),
        ("http://8.8.8.8/a", "http://10.0.0.1/", False),
        ("http://8.8.8.8/a", "http://[::1]:8000/", False),
        ("http://127.0.0.1:8000/a", "https://1.1.1.1/b", True),  # on to the public internet
        ("http://127.0.0.1:8000/a", "http://127.0.0.1:notaport/b", False),
    ],
)
def test_a_redirect_stays_on_the_first_host_or_goes_public(first: str, following: str, allowed: bool) -> None:
    assert redirect_allowed(first, following) is allowed
