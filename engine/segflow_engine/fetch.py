"""Fetching an input by URL, the way the service does: http/https only, bounded in size and time.

Failures carry the service's codes with the action's prefix (`InvalidImage` or `InvalidFile`):
`<prefix>.URL` for a URL that is not http(s) or has no host, `<prefix>.Download` for anything that goes
wrong on the wire. Every `.Download` failure has the same message, whatever happened (refused, reset,
timed out, no such host, an HTTP error status, a refused redirect): an engine reachable by others must not
tell a caller which ports are open or which hosts exist around it. The reason is logged at DEBUG
(`segflow engine --log-level debug`), never with the URL's query (presigned URLs carry signatures).

Redirects are followed by hand, at most `FetchPolicy.max_redirects`, each hop under the same rule: the caller
chose the first URL's host, so a redirect may stay on that host (same name and port); any other host must be
public (`hosts.is_public`), so a public server cannot bounce the engine into its own machine or network.

An input larger than the action's documented `max_bytes` is refused as soon as the size is known (from
Content-Length, or while streaming), with the catalogue's code for it, so nothing larger than the limit is
ever held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

import requests

from segflow.catalogue import Action
from segflow.errors import InputValidationError
from segflow_engine.hosts import is_loopback, is_public

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
class FetchPolicy:
    """Time bounds of one download (seconds). PicWish documents a 10 s download timeout."""

    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 60.0
    max_redirects: int = 3


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


def check_url(action: Action, url: str) -> None:
    """Refuses anything but an absolute http(s) URL with a host (`<prefix>.URL`)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not host:
        raise InputValidationError(
            f"{action.url_param} must be an http or https URL", code=f"{action.error_prefix}.URL"
        )


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
    check_url(action, url)
    url = url.strip()
    limit = max_bytes_for(action)
    deadline = time.monotonic() + policy.total_timeout
    with requests.Session() as session:
        response = _open(session, action, url, policy)
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
                        raise _download_failure(action, url, f"over {policy.total_timeout:g} s")
                    yield chunk
            except requests.RequestException as exc:
                raise _download_failure(action, url, type(exc).__name__) from None


def _open(session: requests.Session, action: Action, url: str, policy: FetchPolicy) -> requests.Response:
    """GET `url`, following at most `policy.max_redirects` redirects, each allowed by `redirect_allowed`."""
    current = url
    for hop in range(policy.max_redirects + 1):
        if hop and not redirect_allowed(url, current):
            raise _download_failure(action, url, f"redirect to {urlsplit(current).netloc} refused")
        # A proxy from the environment must not capture loopback URLs (the local presign server, tests).
        session.trust_env = not is_loopback(urlsplit(current).hostname or "")
        try:
            response = session.get(
                current,
                stream=True,
                allow_redirects=False,
                timeout=(policy.connect_timeout, policy.read_timeout),
                headers={"User-Agent": USER_AGENT},
            )
        except (requests.RequestException, ValueError) as exc:
            raise _download_failure(action, current, type(exc).__name__) from None
        target = session.get_redirect_target(response) if response.is_redirect else None
        if target is None:
            return response
        response.close()
        current = urljoin(current, target)
        if urlsplit(current).scheme.lower() not in ("http", "https"):
            raise _download_failure(action, url, "redirect to a scheme other than http(s)")
    raise _download_failure(action, url, f"more than {policy.max_redirects} redirects")


def redirect_allowed(first_url: str, next_url: str) -> bool:
    """A redirect may stay on the first URL's host (the one the caller chose: same name and port) or go
    to a public host; never to another host of this machine or its private network."""
    first, following = urlsplit(first_url), urlsplit(next_url)
    try:
        same_host = (first.hostname, _port(first)) == (following.hostname, _port(following))
    except ValueError:  # a port that is not a number
        return False
    return same_host or is_public(following.hostname or "")


def _port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme.lower() == "https" else 80)
