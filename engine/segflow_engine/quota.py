"""Optional call quotas, to rehearse the service's throttling locally.

The service allows 2 QPS per API by default (pay-as-you-go) and refuses calls over it — they are not
queued: imageseg/videoseg answer `Throttling.User`, PicWish HTTP 429. The engine does the same when started
with a QPS (`segflow engine --qps 2`); without one it never throttles.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class CallQuota:
    """A token bucket per key (AccessKeyId + action, or AppCode): `qps` tokens a second, `burst` at most."""

    def __init__(
        self, qps: float, *, burst: int | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        self.qps = qps
        self.burst = float(burst if burst is not None else max(1, round(qps)))
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def allow(self, key: str) -> bool:
        """Takes one token for `key`; False when the bucket is empty (the call is over the quota)."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.qps)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # keys are caller-chosen: keep the table bounded
                self._buckets.clear()
            return True
