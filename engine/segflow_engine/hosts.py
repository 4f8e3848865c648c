"""Which hosts are this machine's and which are the public internet's: one rule, used where the engine
listens (`segflow engine --host`) and where its input downloads may be redirected (`fetch`).

Only the standard library, so `segflow engine --help` stays light.
"""

from __future__ import annotations

import ipaddress
import socket

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _literal(host: str) -> IpAddress | None:
    """The address a host string names literally (IPv6 with or without brackets; an IPv4-mapped IPv6
    address as its IPv4 address, so `::ffff:127.0.0.1` is loopback like `127.0.0.1`), else None."""
    try:
        address = ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _normalised_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def is_loopback(host: str) -> bool:
    """True for `localhost` (and `*.localhost`, which RFC 6761 reserves for it) and loopback addresses
    (127.0.0.0/8, ::1). Names are not resolved: this is what a bind address or a URL *says*.

    The wildcard 0.0.0.0 / :: is not loopback: bound, it listens on every interface."""
    name = _normalised_name(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = _literal(name)
    return address is not None and address.is_loopback


def is_public(host: str) -> bool:
    """True when every address `host` names or resolves to is a public internet address (not loopback,
    private, link-local such as the cloud metadata address 169.254.169.254, shared CGNAT space, the
    unspecified 0.0.0.0 — which connects to this machine — nor multicast). A name that does not resolve
    is not public."""
    name = _normalised_name(host)
    if not name or is_loopback(name):
        return False
    literal = _literal(name)
    if literal is not None:
        return _is_public_address(literal)
    try:
        infos = socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = [_literal(str(info[4][0]).split("%", 1)[0]) for info in infos]
    return bool(addresses) and all(a is not None and _is_public_address(a) for a in addresses)


def _is_public_address(address: IpAddress) -> bool:
    return address.is_global and not address.is_multicast
