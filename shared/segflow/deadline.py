"""When an invocation must be finished by, from what Function Compute really gives a handler.

Each handler's first step is `Deadline.from_context(context)`; the services ask `remaining()` before
starting anything that must not be cut off (a claim, a record, a copy). Without a usable
`function.timeout` (a test, a script calling a service directly) there is no deadline.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("segflow.deadline")

_warned = threading.Event()


class Deadline:
    """A point on the monotonic clock; `None` means no deadline is known."""

    __slots__ = ("clock", "expires_at", "timeout")

    def __init__(
        self,
        timeout: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
    ) -> None:
        self.clock = clock
        self.timeout = timeout
        begun = clock() if start is None else start
        self.expires_at = None if timeout is None else begun + timeout

    @classmethod
    def from_context(cls, context: object | None, *, clock: Callable[[], float] = time.monotonic) -> Deadline:
        """The deadline of the invocation `context` belongs to, counted from now (call it at entry).

        FC's Python context has no "time remaining" method (that is AWS Lambda's
        `get_remaining_time_in_millis`); it has `context.function.timeout`, the function's timeout in
        seconds, so the deadline is the time at entry plus that timeout. Without it, `remaining()` is
        infinite and a warning says so once per process."""
        timeout = function_timeout(context)
        if timeout is None and not _warned.is_set():
            _warned.set()
            logger.warning("the handler context has no function.timeout: running without a deadline")
        return cls(timeout, clock=clock)

    @classmethod
    def none(cls) -> Deadline:
        return cls(None)

    def remaining(self) -> float:
        """Seconds left (infinite without a deadline, never negative)."""
        if self.expires_at is None:
            return math.inf
        return max(0.0, self.expires_at - self.clock())

    def has(self, seconds: float) -> bool:
        """True while at least `seconds` remain."""
        return self.remaining() >= seconds

    def __repr__(self) -> str:
        return f"Deadline(timeout={self.timeout!r}, remaining={self.remaining():.1f})"


def function_timeout(context: object | None) -> float | None:
    """`context.function.timeout` in seconds when it is a positive number, else None."""
    function = getattr(context, "function", None) if context is not None else None
    timeout = getattr(function, "timeout", None)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        return None
    return float(timeout)
