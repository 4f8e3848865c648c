"""A client-side limiter so one process never exceeds the API's QPS quota.

The vision APIs refuse calls over the quota (imageseg `Throttling.User`, PicWish HTTP 429, 2 QPS by
default) instead of queueing them, so every HTTP attempt — retries included — takes a slot first.
`RateLimiter.shared(qps)` hands every client and thread of a process the same limiter.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import ClassVar

DEFAULT_QPS = 2.0  # the documented default quota of imageseg, videoseg and PicWish
DEFAULT_JITTER_MARGIN = 0.06  # seconds added to the sliding window for delays between us and the server


class RateLimiter:
    """Token bucket (`qps` tokens per second, at most `burst` saved up) under a sliding-window cap of
    ⌊qps⌋ requests per `1 s + jitter_margin`. Thread-safe.

    The bucket alone is not enough: at exactly `qps` it lets `qps + 1` requests land in one second (the
    first and the last of a run are exactly a second apart) and network jitter bunches them further, so a
    server counting a sliding second throttles us, and each throttled answer costs another request.
    """

    _shared: ClassVar[dict[tuple[str, float, int], RateLimiter]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        qps: float = DEFAULT_QPS,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        jitter_margin: float = DEFAULT_JITTER_MARGIN,
    ) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        self.qps = float(qps)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._updated = clock()
        self._per_window = max(1, math.floor(self.qps))
        self._window = max(1.0, self._per_window / self.qps) + jitter_margin
        self._sent: deque[float] = deque(maxlen=self._per_window)

    @classmethod
    def shared(cls, qps: float = DEFAULT_QPS, *, key: str = "vision", burst: int = 1) -> RateLimiter:
        """The process-wide limiter for `key` (one per key and setting, created on first use)."""
        shared_key = (key, float(qps), burst)
        with cls._shared_lock:
            limiter = cls._shared.get(shared_key)
            if limiter is None:
                limiter = cls(qps, burst)
                cls._shared[shared_key] = limiter
            return limiter

    def reserve(self) -> float:
        """Take a token now, possibly on credit; return how long the caller must wait before using it."""
        return self._book()[0]

    def _book(self) -> tuple[float, float]:
        """(wait, slot): the caller may send `wait` seconds from now, at `slot` on the clock."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.qps)
            self._updated = now
            self._tokens -= 1.0
            start = now if self._tokens >= 0 else now - self._tokens / self.qps
            if len(self._sent) == self._per_window:
                start = max(start, self._sent[0] + self._window)
            self._sent.append(start)
            return start - now, start

    def acquire(self) -> None:
        """Block until this caller may send one request.

        A caller that finds the bucket empty reserves the next free slot under the lock and sleeps outside
        it, so waiting threads are served in arrival order and never spin. One that wakes up late (many
        threads share one GIL) sends later than its slot: `_sent_late` keeps the time it really went, so a
        late request never lands in the same second as ⌊qps⌋ later ones that were on time."""
        wait, slot = self._book()
        if wait > 0:
            self._sleep(wait)
        sent = self._clock()
        if sent > slot:
            self._sent_late(slot, sent)

    def _sent_late(self, slot: float, sent: float) -> None:
        """Keep `sent` instead of `slot` for the window: a later time only ever spaces what follows more."""
        with self._lock:
            for index, booked in enumerate(self._sent):
                if booked == slot:
                    self._sent[index] = sent
                    return
