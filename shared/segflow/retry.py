"""Which API errors are worth another attempt, and how long to wait before it.

Whether an error is retried is data (`RETRY_TABLE`), looked up by the documented `Code` and the HTTP
status, never by message text — the same idea as aliyun-python-sdk-core's `retry_config.json`.
Waiting is exponential backoff with full jitter, bounded both in attempts and in total time so a
Function Compute invocation never spends its whole timeout on one throttled call.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

from segflow.errors import ApiConnectionError, ApiError, SegflowError

if TYPE_CHECKING:
    from segflow.deadline import Deadline

    class Uniform(Protocol):  # for mypy only: defining a Protocol costs a cold start ~25 µs
        def uniform(self, a: float, b: float) -> float: ...


logger = logging.getLogger("segflow.retry")

T = TypeVar("T")

ANY_CODE = "*"

_RETRYABLE_CODES = (
    # imageseg: 400 Throttling.User (2 QPS by default); the gateway's generic throttling family.
    "Throttling",
    "Throttling.User",
    "Throttling.Api",
    "ServiceUnavailable",
    # imageseg 408.
    "Timeout",
    # imageseg 500 family.
    "InternalError",
    "InternalError.Env",
    "InternalError.Model",
    "InternalError.Algo",
    # videoseg 500 family.
    "InternalServerError",
    "InternalServerError.Model",
    "InternalServerError.Algo",
    "InternalServerError.Busy",
    # Our own codes: the connection broke or timed out; PicWish HTTP 429 (over its 2 QPS).
    "ConnectionError",
    "ConnectionTimeout",
    "PicWish.Throttling",
)

# (code or "*", HTTP status or None) -> retry?  Looked up most specific first, see `is_retryable`.
RETRY_TABLE: Mapping[tuple[str, int | None], bool] = {
    **{(code, None): True for code in _RETRYABLE_CODES},
    (ANY_CODE, 408): True,
    (ANY_CODE, 429): True,
    **{(ANY_CODE, status): True for status in range(500, 600)},
    # A 5xx that says the product was never bought will not get better by asking again.
    ("InvalidApi.NotPurchase", None): False,
}


def is_retryable(code: str | None, status: int | None) -> bool:
    """Look the error up in `RETRY_TABLE`: (code, status), (code, any), (code family, any), (any, status).

    The code family is the part before the first dot, so an undocumented `Throttling.Foo` is still
    throttling. Anything the table does not name is not retried.
    """
    keys: list[tuple[str, int | None]] = []
    if code:
        keys += [(code, status), (code, None)]
        family = code.split(".", 1)[0]
        if family != code:
            keys.append((family, None))
    keys.append((ANY_CODE, status))
    for key in keys:
        if key in RETRY_TABLE:
            return RETRY_TABLE[key]
    return False


def is_retryable_error(error: ApiError) -> bool:
    """A connection problem is always worth another attempt; otherwise the table decides."""
    if isinstance(error, ApiConnectionError):
        return True
    return is_retryable(error.code, error.http_status)


class RetryPolicy:
    """Bounded exponential backoff with full jitter (delay = uniform(0, min(max_delay, base·2^n))).

    Equality, hashing and repr look at the four bounds only, not at the injected `sleep`, `rng` and
    `clock`. Each policy gets its own `random.Random()` unless given one, made at its first backoff (seeding
    one costs a cold start ~25 µs, and most policies never retry).
    """

    __slots__ = ("_rng", "base_delay", "clock", "max_attempts", "max_delay", "max_total", "sleep")

    def __init__(
        self,
        max_attempts: int = 4,
        base_delay: float = 0.2,
        max_delay: float = 5.0,
        max_total: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: Uniform | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if base_delay < 0 or max_delay < 0 or max_total < 0:
            raise ValueError("delays must not be negative")
        self.max_attempts: Final = max_attempts
        self.base_delay: Final = base_delay
        self.max_delay: Final = max_delay
        self.max_total: Final = max_total
        self.sleep: Final = sleep
        self._rng = rng
        self.clock: Final = clock

    def _bounds(self) -> tuple[int, float, float, float]:
        return (self.max_attempts, self.base_delay, self.max_delay, self.max_total)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RetryPolicy):
            return NotImplemented
        return self._bounds() == other._bounds()

    def __hash__(self) -> int:
        return hash(self._bounds())

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(max_attempts={self.max_attempts!r}, base_delay={self.base_delay!r}, "
            f"max_delay={self.max_delay!r}, max_total={self.max_total!r})"
        )

    def backoff_ceiling(self, retry_number: int) -> float:
        """The largest delay before retry number `retry_number` (1 for the first retry)."""
        exponent = max(retry_number - 1, 0)
        # Cap the exponent: 2**1000 is a float overflow waiting to happen.
        return float(min(self.max_delay, self.base_delay * (2 ** min(exponent, 62))))

    def backoff(self, retry_number: int) -> float:
        """A full-jitter delay in [0, backoff_ceiling(retry_number)]."""
        rng = self._rng
        if rng is None:
            rng = self._rng = random.Random()
        return rng.uniform(0.0, self.backoff_ceiling(retry_number))

    def run(
        self,
        attempt: Callable[[], T],
        *,
        what: str = "call",
        deadline: Deadline | None = None,
        retry_if: Callable[[SegflowError], bool] | None = None,
    ) -> T:
        """Call `attempt` until it succeeds, raises an error `retry_if` refuses (default: a non-retryable
        `ApiError`, by `RETRY_TABLE`), or the bounds are hit.

        The last error is raised as is. Time spent inside attempts counts toward `max_total`; a
        retry whose delay would cross `max_total` (or the invocation's `deadline`) is not started.
        """
        retryable = retry_if or _retryable_api_error
        started = self.clock()
        number = 1
        while True:
            try:
                return attempt()
            except SegflowError as error:
                if not retryable(error) or number >= self.max_attempts:
                    raise
                delay = self.backoff(number)
                elapsed = self.clock() - started
                if elapsed + delay > self.max_total or (deadline is not None and not deadline.has(delay)):
                    logger.warning(
                        "%s: giving up after %d attempts and %.2fs (%s)", what, number, elapsed, error.code
                    )
                    raise
                logger.info(
                    "%s: attempt %d failed with %s (HTTP %s, RequestId %s); retrying in %.2fs",
                    what,
                    number,
                    error.code,
                    error.http_status,
                    error.request_id,
                    delay,
                )
                self.sleep(delay)
                number += 1


def _retryable_api_error(error: SegflowError) -> bool:
    return isinstance(error, ApiError) and is_retryable_error(error)
