"""One HTTP attempt for the API clients and the temporary-bucket upload: the request, a rate-limit token
when the API has a quota, and connection failures as `ApiConnectionError` whose text never holds the URL
(a v1 URL carries the signature). Nothing here logs a URL, a header or a body; urllib3's own DEBUG lines
get their `Signature=` / token values blanked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

import requests

from segflow.errors import ApiConnectionError, DeadlineError
from segflow.values import Value

if TYPE_CHECKING:
    from segflow.deadline import Deadline
    from segflow.ratelimit import RateLimiter

logger = logging.getLogger("segflow.client")

USER_AGENT = "segflow/0.1 (+requests)"
DEADLINE_SAFETY_SECONDS = 1.0


class SizedReader(Protocol):
    """A request body sent as a stream of known length (requests sends `Content-Length`, not chunks)."""

    def read(self, size: int = -1) -> bytes: ...

    def __len__(self) -> int: ...


class Answer(Value):
    """One HTTP answer, read fully."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class HttpTransport:
    """Sends one request and reads its answer; shares one `requests.Session` (made on first use)."""

    def __init__(self, session: requests.Session | None, timeout: float) -> None:
        self._session = session
        self._session_lock = threading.Lock()
        self.timeout = timeout
        _hide_secrets_in_urllib3_logs()

    @property
    def session(self) -> requests.Session:
        with self._session_lock:
            if self._session is None:
                self._session = requests.Session()
            return self._session

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | SizedReader,
        *,
        limiter: RateLimiter | None,
        what: str,
        deadline: Deadline | None = None,
    ) -> Answer:
        """`limiter=None` for requests outside any API quota (the form POST to a bucket)."""
        host = urlsplit(url).netloc
        timeout = self.timeout
        if deadline is not None:
            # An answer that would come after the function's timeout is worth nothing: never wait past it.
            left = deadline.remaining() - DEADLINE_SAFETY_SECONDS
            if left <= 0:
                raise DeadlineError(f"{what}: not sent, the invocation is about to time out")
            timeout = min(timeout, left)
        if limiter is not None:
            limiter.acquire()
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                headers=dict(headers),
                data=body if not isinstance(body, bytes) else (body or None),
                timeout=timeout,
                allow_redirects=False,
            )
            content = response.content
        except requests.Timeout:
            # `from None`: the requests exception's text holds the URL, and a v1 URL holds the signature.
            raise ApiConnectionError(
                f"{what}: no answer from {host} within {timeout:g}s", code="ConnectionTimeout"
            ) from None
        except requests.RequestException as error:
            raise ApiConnectionError(
                f"{what}: connection to {host} failed ({type(error).__name__})", code="ConnectionError"
            ) from None
        logger.debug(
            "%s: HTTP %d from %s in %.0f ms",
            what,
            response.status_code,
            host,
            (time.monotonic() - started) * 1e3,
        )
        return Answer(response.status_code, response.headers, content)


# --- keep secrets out of third-party logs ----------------------------------------------------------------

_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")
"""The urllib3 loggers that write request URLs (request lines, retries, redirects) at DEBUG."""
_filter_lock = threading.Lock()
_filter_installed = False


class _RedactQuerySecrets(logging.Filter):
    """urllib3 logs `"POST /?…&Signature=… HTTP/1.1" 200` at DEBUG, with an input URL percent-encoded
    inside `ImageURL` (`Signature%3D…`, `security-token%3D…`): mask every encoding of every secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        from segflow.logs import redact_known

        message = record.getMessage()
        redacted = redact_known(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def _hide_secrets_in_urllib3_logs() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            for name in _URLLIB3_LOGGERS:
                logging.getLogger(name).addFilter(_RedactQuerySecrets())
            _filter_installed = True
