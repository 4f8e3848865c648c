"""Fetching an input by URL, the way the service does: http/https only, bounded in size and time.

Failures carry the service's codes with the action's prefix (`InvalidImage` or `InvalidFile`):
`<prefix>.URL` for a URL that is not http(s) or has no host, `<prefix>.Download` for anything that goes
wrong on the wire (refused, timed out, HTTP error status). An input larger than the action's documented
`max_bytes` is refused as soon as the size is known (from Content-Length, or while streaming), with the
catalogue's code for it, so nothing larger than the limit is ever held.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

from segflow.catalogue import Action
from segflow.errors import InputValidationError

# When the catalogue documents no size limit, these still bound what the engine will hold.
DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_VIDEO_BYTES = 1024 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
USER_AGENT = "segflow-engine/0.1 (input fetch)"


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


def _download_error(action: Action, reason: str) -> InputValidationError:
    return InputValidationError(
        f"could not download {action.url_param}: {reason}", code=f"{action.error_prefix}.Download"
    )


def _stream(action: Action, url: str, policy: FetchPolicy) -> Iterator[bytes]:
    check_url(action, url)
    limit = max_bytes_for(action)
    deadline = time.monotonic() + policy.total_timeout
    session = requests.Session()
    session.max_redirects = policy.max_redirects
    # A proxy from the environment must not capture loopback URLs (the local presign server, tests).
    session.trust_env = not _is_loopback(urlsplit(url).hostname or "")
    try:
        try:
            response = session.get(
                url.strip(),
                stream=True,
                timeout=(policy.connect_timeout, policy.read_timeout),
                headers={"User-Agent": USER_AGENT},
            )
        except requests.RequestException as exc:
            raise _download_error(action, type(exc).__name__) from None
        with response:
            if response.status_code >= 400:
                raise _download_error(action, f"HTTP {response.status_code}")
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
                        raise _download_error(action, f"took longer than {policy.total_timeout:g} s")
                    yield chunk
            except requests.RequestException as exc:
                raise _download_error(action, type(exc).__name__) from None
    finally:
        session.close()


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
