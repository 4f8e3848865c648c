"""The engine's host rules: which hosts name this machine (`hosts.is_loopback`), how an input URL is read
(`fetch.read_input_url`), which connections must be public (`fetch.AddressRule`) and which addresses count
as public (requests-hardened's `filter_host`, the check the engine's downloads make on the address they
connect to).

Literal addresses only: nothing here resolves a name or opens a socket.
"""

from __future__ import annotations

import pytest
from requests_hardened.ip_filter import InvalidIPAddress, filter_host

from segflow_engine.config import EngineConfig
from segflow_engine.fetch import IMAGE_POLICY, AddressRule, read_input_url
from segflow_engine.hosts import is_loopback


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


@pytest.mark.parametrize("host", ["8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_public(host: str) -> None:
    assert filter_host(host, 80, allow_loopback=False) in (host, f"[{host}]")


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "0.0.0.0",  # connecting to it reaches this machine
        "::",
        "::1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.10",
        "169.254.169.254",  # the cloud metadata service
        "100.100.100.200",  # Alibaba Cloud's metadata service
        "100.64.0.1",  # shared CGNAT space
        "fd00::1",
        "fe80::1",
        "::ffff:10.0.0.1",
        "224.0.0.1",
        "ff02::1",
    ],
)
def test_machine_private_and_special_addresses_are_refused(host: str) -> None:
    with pytest.raises(InvalidIPAddress):
        filter_host(host, 80, allow_loopback=False)


@pytest.mark.parametrize(
    ("url", "host", "port"),
    [
        ("http://127.0.0.1:8000/a?Signature=x%2By", "127.0.0.1", 8000),
        ("HTTPS://Files.Example/a", "files.example", 443),
        ("http://[::1]/a", "::1", 80),
        ("  http://example.com/a  ", "example.com", 80),  # surrounding whitespace is no part of it
        ("http://a.example#@b.example/x", "a.example", 80),  # both readers agree: a fragment
    ],
)
def test_an_input_url_is_read_as_the_http_client_sends_it(url: str, host: str, port: int) -> None:
    read = read_input_url(url)
    assert read is not None and (read.host, read.port) == (host, port)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2:8000\\@127.0.0.1:9000/img.jpg",  # issue 15: urlsplit says .1:9000, requests .2:8000
        "http://user:secret@example.com/a",  # userinfo
        "http://example.com\\evil.example/a",
        "http://example.com\t/a",
        "http://exa mple.com/a",
        "http://example.com/a\nb",
        "http://example.com/\u200ba",  # an invisible character
        "http://127.0.0.1%2e/a",  # an encoded host reads two ways
        "http://example.com:0081/a",
        "http://example.com:/a",
        "http://example.com:0/a",
        "http://example.com:99999/a",
        "http://example.com:8o/a",
        "http://bücher.example/a",  # requests sends the IDNA form: not the name the caller wrote
        "ftp://example.com/a",
        "http:///a",
        "",
    ],
)
def test_an_input_url_that_cannot_be_read_one_way_only_is_refused(url: str) -> None:
    assert read_input_url(url) is None


@pytest.mark.parametrize(
    ("rule", "first", "current", "public_only"),
    [
        (AddressRule(), "http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b", False),  # the caller's host
        (AddressRule(), "http://Files.Local:80/a", "http://files.local/b", False),  # spelled apart
        (AddressRule(), "http://127.0.0.1:8000/a", "http://127.0.0.1:8001/b", True),  # another service
        (AddressRule(), "http://127.0.0.1:8000/a", "http://localhost:8000/b", True),  # another name
        (AddressRule(public_only=True), "http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b", True),
        (
            AddressRule(True, frozenset({"oss.internal"})),
            "http://oss.internal/a",
            "http://oss.internal/b",
            False,
        ),
        (
            AddressRule(True, frozenset({"oss.internal:8080"})),
            "http://x.example/a",
            "http://oss.internal/b",
            True,
        ),
        # An OSS endpoint names its buckets as subdomains (`<bucket>.<endpoint>`, OSS "Endpoints and
        # access domain names"); inside FC the -internal endpoint resolves to a private address.
        (
            AddressRule(True, allowed_domains=frozenset({"oss-cn-shanghai-internal.aliyuncs.com"})),
            "http://x.example/a",
            "https://segflow-demo.oss-cn-shanghai-internal.aliyuncs.com/k",
            False,
        ),
        (
            AddressRule(True, allowed_domains=frozenset({"oss-cn-shanghai-internal.aliyuncs.com"})),
            "http://x.example/a",
            "https://oss-cn-shanghai-internal.aliyuncs.com.evil.example/k",
            True,
        ),
    ],
)
def test_which_connections_must_reach_a_public_address(
    rule: AddressRule, first: str, current: str, public_only: bool
) -> None:
    read_first, read_current = read_input_url(first), read_input_url(current)
    assert read_first is not None and read_current is not None
    assert rule.public_only_for(read_first, read_current) is public_only


@pytest.mark.parametrize(
    ("host", "public_only"), [("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True), ("::", True)]
)
def test_an_engine_beyond_loopback_fetches_from_public_addresses_only_unless_told(
    host: str, public_only: bool
) -> None:
    assert EngineConfig(host=host).fetch_policy(IMAGE_POLICY).addresses.public_only is public_only
    told = EngineConfig(host=host, input_addresses=AddressRule(public_only=False))
    assert told.fetch_policy(IMAGE_POLICY).addresses.public_only is False
