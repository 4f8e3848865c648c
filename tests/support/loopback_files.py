"""The answer of the tests' loopback file servers (input files, result URLs): a status without a body,
or the file, written at once or throttled to `rate` bytes per second."""

from __future__ import annotations

import time
from http.server import BaseHTTPRequestHandler

THROTTLE_PIECE = 64 * 1024


def answer_file(
    handler: BaseHTTPRequestHandler, status: int | None, data: bytes | None, rate: float | None = None
) -> None:
    """Answer `status` with an empty body when given, 404 when there is no file, else 200 with `data`."""
    if status is None and data is None:
        status = 404
    if status is not None:
        handler.send_response(status)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
        return
    assert data is not None
    handler.send_response(200)
    handler.send_header("Content-Type", "application/octet-stream")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    if rate is None:
        handler.wfile.write(data)
        return
    try:
        for start in range(0, len(data), THROTTLE_PIECE):
            handler.wfile.write(data[start : start + THROTTLE_PIECE])
            handler.wfile.flush()
            time.sleep(THROTTLE_PIECE / rate)
    except OSError:
        return  # the client gave up (as the collector does near its deadline)
