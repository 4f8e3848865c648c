"""Input downloads are bounded in size and time even when the server does not say how big the file is.

GIVEN loopback servers that stream without Content-Length, stall, or redirect in circles
WHEN  the engine's fetcher downloads from them
THEN  it stops at the action's byte limit (VISION-API.md §2: SegmentBody ≤ 3 MB) or its time bounds, with the
      service's codes, and never holds more than the limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from segflow.catalogue import MiB, get_action
from segflow.errors import InputValidationError
from segflow.values import replace
from segflow_engine.fetch import FetchPolicy, fetch_bytes, fetch_to_file
from tests.support.loopback_http import LoopbackServer

CHUNK = b"\0" * 65536


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # body ends when the connection closes: no Content-Length needed

    def do_GET(self) -> None:
        if self.path == "/endless":
            self.send_response(200)
            self.end_headers()
            try:
                for _ in range(10 * MiB // len(CHUNK)):
                    self.wfile.write(CHUNK)
            except (BrokenPipeError, ConnectionResetError):
                return
        elif self.path == "/small":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x" * 1000)
        elif self.path == "/stall":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(2)
        elif self.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with LoopbackServer(_Handler) as server:
        yield server.base_url


def test_stream_without_length_stops_at_3_mb_for_segment_body(base_url: str) -> None:
    with pytest.raises(InputValidationError) as refused:
        fetch_bytes(get_action("SegmentBody"), f"{base_url}/endless")
    assert refused.value.code == "InvalidParameter.TooLarge"


def test_video_stream_over_120_mb_limit_is_not_kept_on_disk(base_url: str, tmp_path: Path) -> None:
    # SegmentGreenScreenVideo ≤ 120 MB; a 3 MB cap stands in through a copy of its catalogue entry.

    action = get_action("SegmentGreenScreenVideo")
    small = replace(action, limits=replace(action.limits, max_bytes=3 * MiB))
    dest = tmp_path / "input"
    with pytest.raises(InputValidationError) as refused:
        fetch_to_file(small, f"{base_url}/endless", dest)
    assert refused.value.code == "InvalidFile.Content"
    assert not dest.exists()


def test_small_stream_without_length_is_read_whole(base_url: str) -> None:
    assert fetch_bytes(get_action("SegmentBody"), f"{base_url}/small") == b"x" * 1000


def test_stalled_download_is_invalid_image_download(base_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(InputValidationError) as refused:
        fetch_bytes(get_action("SegmentBody"), f"{base_url}/stall", FetchPolicy(read_timeout=0.3))
    assert refused.value.code == "InvalidImage.Download"
    assert time.monotonic() - started < 1.5


def test_redirect_loop_is_invalid_file_download(base_url: str) -> None:
    with pytest.raises(InputValidationError) as refused:
        fetch_bytes(get_action("SegmentVideoBody"), f"{base_url}/loop")
    assert refused.value.code == "InvalidFile.Download"
