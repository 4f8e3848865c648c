"""A slow imageseg with the account's QPS cap, on top of `FakeApi`, for backfill tests and bench/backfill.py.

Every SegmentCommonImage answer takes `latency` seconds, and arrivals are counted in a sliding one-second
window: above `cap` the service answers `400 Throttling.User` ("Request was denied due to user flow
control."), as imageseg does above the account's QPS (imageseg error codes; 2 QPS by default). It does
not fetch the input (the rate is what is measured): the answer names one small result file.
`submissions` counts the calls per source key (from the presigned URL's path), throttled ones apart.
"""

from __future__ import annotations

import io
import threading
from collections import Counter, deque
from typing import Any
from urllib.parse import unquote, urlsplit

from tests.support.fake_api import FakeApi, RecordedRequest, Reply


def _small_png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGBA", (8, 8), (10, 20, 30, 255)).save(buffer, "PNG")
    return buffer.getvalue()


class CappedVision:
    """imageseg's SegmentCommonImage, slow and capped at `cap` requests in any one-second window."""

    def __init__(
        self, api: FakeApi, results: Any, *, cap: int, latency: float, input_prefix: str = "incoming/"
    ):
        self.api = api
        self.cap = cap
        self.latency = latency
        self.input_prefix = input_prefix
        self.result_url = results.add(_small_png(), ".png")
        self.submissions: Counter[str] = Counter()
        self.throttled = 0
        self.max_in_window = 0
        self._arrivals: deque[float] = deque()
        self._lock = threading.Lock()
        api.set_handler(self.handle)

    def reset(self) -> None:
        with self._lock:
            self.submissions.clear()
            self._arrivals.clear()
            self.throttled = self.max_in_window = 0

    def key_of(self, url: str) -> str:
        path = unquote(urlsplit(url).path)
        return path[path.index(self.input_prefix) :] if self.input_prefix in path else path

    def handle(self, request: RecordedRequest) -> Reply:
        with self._lock:
            now = request.arrived
            self._arrivals.append(now)
            while self._arrivals and now - self._arrivals[0] >= 1.0:
                self._arrivals.popleft()
            self.max_in_window = max(self.max_in_window, len(self._arrivals))
            if len(self._arrivals) > self.cap:
                self.throttled += 1
                return Reply.error(
                    400, "Throttling.User", "Request was denied due to user flow control.", delay=self.latency
                )
            if request.action == "SegmentCommonImage":
                self.submissions[self.key_of(request.params.get("ImageURL", ""))] += 1
        if request.action != "SegmentCommonImage":
            return Reply.error(400, "InvalidAction.NotFound", request.action, delay=self.latency)
        return Reply.ok({"ImageURL": self.result_url}, delay=self.latency)
