"""Which hosts name this machine: one rule, for where the engine listens (`segflow engine --host`: beyond
loopback its inputs must be public) and for whether a download may use the environment's proxy (`fetch`).
Which addresses are public is requests-hardened's rule, applied to the address a download connects to.

Only the standard library, so `segflow engine --help` stays light.
"""

from __future__ import annotations

import ipaddress

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
