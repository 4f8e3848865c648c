"""Fetching an input by URL, the way the service does: http/https only, bounded in size and time.

Failures carry the service's codes with the action's prefix (`InvalidImage` or `InvalidFile`):
`<prefix>.URL` for a URL that is not http(s), has no host, or cannot be read one way only (see
`read_input_url`), `<prefix>.Download` for anything that goes wrong on the wire. Every `.Download` failure
has the same message, whatever happened (refused, reset, timed out, no such host, an HTTP error status, a
refused address or redirect): an engine reachable by others must not tell a caller which ports are open or
which hosts exist around it. The reason is logged at DEBUG (`segflow engine --log-level debug`), never
with the URL's query (presigned URLs carry signatures).

The URL checked is the URL sent: `read_input_url` reads it as requests prepares it, and refuses one that
the standard library would read otherwise (`http://a:1\\@b:2/` names `b` to one, `a` to the other).

Which addresses a connection may reach is `AddressRule`, checked on the address the connection is made to
(requests-hardened resolves the name once and connects to that address, so DNS cannot answer the check
and the connection differently):
- with `public_only` (on by default when the engine listens beyond loopback), every connection must reach
  a public address: never loopback, private, link-local (the cloud metadata addresses 169.254.169.254 and
  Alibaba Cloud's 100.100.100.200), shared CGNAT, multicast or unspecified;
- without it, the caller's own URL and redirects that stay on its host (same name and port) may reach
  any address, and a redirect to another host must reach a public address: a public server cannot bounce
  the engine into its own machine or network;
- `allowed_hosts` are exempt from both, and so are `allowed_domains` with their subdomains (issue 17: the
  OSS endpoint the engine on Function Compute is configured with, whose buckets are its subdomains; inside
  FC the `-internal` endpoint resolves to a private address).

An input larger than the action's documented `max_bytes` is refused as soon as the size is known (from
Content-Length, or while streaming), with the catalogue's code for it, so nothing larger than the limit is
ever held.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import requests
from requests_hardened import Config, HTTPSession

from segflow.catalogue import Action
from segflow.errors import InputValidationError
from segflow_engine.hosts import is_loopback

LOG = logging.getLogger("segflow_engine.fetch")

# When the catalogue documents no size limit, these still bound what the engine will hold.
DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 1024 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
USER_AGENT = "segflow-engine/0.1 (input fetch)"
DOWNLOAD_FAILED_MESSAGE = (
    "could not download {param}: the server was unreachable, did not answer in time, or did not return "
    "the file"
)


@dataclass(frozen=True)
class AddressRule:
    """Which addresses input downloads may connect to (see the module docstring)."""

    public_only: bool = False
    allowed_hosts: frozenset[str] = frozenset()  # "host" or "host:port", lower case
    # Names whose subdomains are allowed too: an OSS endpoint, where each bucket is `<bucket>.<endpoint>`.
    allowed_domains: frozenset[str] = frozenset()

    def allows(self, url: InputUrl) -> bool:
        if url.host in self.allowed_hosts or url.authority in self.allowed_hosts:
            return True
        return any(url.host == name or url.host.endswith(f".{name}") for name in self.allowed_domains)

    def public_only_for(self, first: InputUrl, current: InputUrl) -> bool:
        """Whether the connection to `current`, reached from the caller's `first`, must be public."""
        if self.allows(current):
            return False
        return self.public_only or (current.host, current.port) != (first.host, first.port)


@dataclass(frozen=True)
class FetchPolicy:
    """Time bounds of one download (seconds), and where it may connect. PicWish documents a 10 s
    download timeout."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 60.0
    max_redirects: int = 3
    addresses: AddressRule = field(default_factory=AddressRule)


@dataclass(frozen=True)
class InputUrl:
    """An input URL as requests sends it, and the host and port it connects to."""

    url: str
    scheme: str
    host: str  # lower case, an IPv6 address without brackets
    port: int  # the URL's, else the scheme's

    @property
    def authority(self) -> str:
        return f"{self.host}:{self.port}"


_PORT = re.compile(r"[1-9][0-9]{0,4}")
_AUTHORITY = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(?::(?P<port>.*))?")


def read_input_url(text: str) -> InputUrl | None:
    """`text` (surrounding whitespace aside) as requests will send it, or None when it cannot be read one
    way only: whitespace, control or invisible characters, a backslash, userinfo (`user@`), a port that is
    not plain digits in 1-65535, a scheme other than http(s), no host, or a host or port the standard
    library's `urlsplit` reads differently from requests."""
    url = text.strip()
    if any(ch.isspace() or ch == "\\" or unicodedata.category(ch) in ("Cc", "Cf") for ch in url):
        return None
    try:
        written = urlsplit(url)
        prepared = requests.Request("GET", url).prepare().url or ""
        sent = urlsplit(prepared)
        ports = (written.port, sent.port)
    except (requests.RequestException, ValueError, UnicodeError):
        return None
    scheme = written.scheme.lower()
    authority = _AUTHORITY.fullmatch(written.netloc)
    if scheme not in ("http", "https") or "@" in written.netloc or not sent.hostname or authority is None:
        return None
    if authority["port"] is not None and not _PORT.fullmatch(authority["port"]):
        return None
    if (written.hostname, ports[0], scheme) != (sent.hostname, ports[1], sent.scheme):
        return None
    port = ports[1] or (443 if scheme == "https" else 80)
    return InputUrl(prepared, scheme, sent.hostname, port) if port < 65536 else None


IMAGE_POLICY = FetchPolicy(total_timeout=30.0)
PICWISH_POLICY = FetchPolicy(total_timeout=10.0)
VIDEO_POLICY = FetchPolicy(read_timeout=30.0, total_timeout=600.0)


def max_bytes_for(action: Action) -> int:
    if action.limits.max_bytes is not None:
        return int(action.limits.max_bytes)
    return DEFAULT_MAX_VIDEO_BYTES if action.media == "video" else DEFAULT_MAX_IMAGE_BYTES


def too_large_error(action: Action, size: int) -> InputValidationError:
    """The refusal of an input over the action's byte limit, with the code validation uses for it
    (imageseg `InvalidParameter.TooLarge`, videoseg `InvalidFile.Content`, PicWish `PicWish.TooLarge`)."""
    return InputValidationError(
        f"the input is {size} bytes; {action.name} accepts at most {max_bytes_for(action)} bytes",
        code=action.codes.too_large,
        http_status=action.codes.too_large_http_status,
    )


def check_url(action: Action, url: str) -> InputUrl:
    """The URL as it will be fetched; refuses (`<prefix>.URL`) what `read_input_url` cannot read."""
    read = read_input_url(url)
    if read is None:
        raise InputValidationError(
            f"{action.url_param} must be an http or https URL", code=f"{action.error_prefix}.URL"
        )
    return read


def fetch_bytes(action: Action, url: str, policy: FetchPolicy = IMAGE_POLICY) -> bytes:
    """The whole input in memory (images: a few MB at most)."""
    chunks = list(_stream(action, url, policy))
    return b"".join(chunks)


def fetch_to_file(action: Action, url: str, dest: Path, policy: FetchPolicy = VIDEO_POLICY) -> int:
    """Streams the input into `dest` (videos: up to 1 GB, never held in memory); returns its size."""
    size = 0
    try:
        with dest.open("wb") as out:
            for chunk in _stream(action, url, policy):
                out.write(chunk)
                size += len(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return size


def _download_failure(action: Action, url: str, reason: str) -> InputValidationError:
    """The one `.Download` refusal; `reason` goes to the debug log only (see the module docstring)."""
    parts = urlsplit(url)
    LOG.debug("download from %s://%s%s failed: %s", parts.scheme, parts.netloc, parts.path, reason)
    return InputValidationError(
        DOWNLOAD_FAILED_MESSAGE.format(param=action.url_param), code=f"{action.error_prefix}.Download"
    )


def _stream(action: Action, url: str, policy: FetchPolicy) -> Iterator[bytes]:
    first = check_url(action, url)
    limit = max_bytes_for(action)
    deadline = time.monotonic() + policy.total_timeout
    with _Sessions() as sessions:
        response = _open(sessions, action, first, policy)
        with response:
            if response.status_code >= 400:
                raise _download_failure(action, response.url, f"HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise too_large_error(action, int(declared))
            received = 0
            try:
                for chunk in response.iter_content(CHUNK_BYTES):
                    received += len(chunk)
                    if received > limit:
                        raise too_large_error(action, received)
                    if time.monotonic() > deadline:
                        raise _download_failure(action, first.url, f"over {policy.total_timeout:g} s")
                    yield chunk
            except requests.RequestException as exc:
                raise _download_failure(action, first.url, type(exc).__name__) from None


class _Sessions:
    """The two ways to connect: plain, or only to a public address (requests-hardened pins the address
    it checked), each opened on first use."""

    def __init__(self) -> None:
        self._open: dict[bool, requests.Session] = {}

    def get(self, public_only: bool) -> requests.Session:
        if public_only not in self._open:
            self._open[public_only] = HTTPSession(_PUBLIC_ONLY) if public_only else requests.Session()
        return self._open[public_only]

    def __enter__(self) -> _Sessions:
        return self

    def __exit__(self, *exc: object) -> None:
        for session in self._open.values():
            session.close()


_PUBLIC_ONLY = Config(
    ip_filter_enable=True, ip_filter_allow_loopback_ips=False, never_redirect=True, default_timeout=None
)


def _open(sessions: _Sessions, action: Action, first: InputUrl, policy: FetchPolicy) -> requests.Response:
    """GET the input, following at most `policy.max_redirects` redirects, each connection within
    `policy.addresses`."""
    current = first
    for _ in range(policy.max_redirects + 1):
        session = sessions.get(policy.addresses.public_only_for(first, current))
        # A proxy from the environment must not capture loopback URLs (the local presign server, tests).
        session.trust_env = not is_loopback(current.host)
        try:
            response = session.get(
                current.url,
                stream=True,
                allow_redirects=False,
                timeout=(policy.connect_timeout, policy.read_timeout),
                headers={"User-Agent": USER_AGENT},
            )
        except (requests.RequestException, ValueError) as exc:
            raise _download_failure(action, current.url, type(exc).__name__) from None
        target = session.get_redirect_target(response) if response.is_redirect else None
        if target is None:
            return response
        response.close()
        following = read_input_url(urljoin(current.url, target))
        if following is None:
            raise _download_failure(action, first.url, "a redirect to a URL that is not one http(s) URL")
        current = following
    raise _download_failure(action, first.url, f"more than {policy.max_redirects} redirects")
