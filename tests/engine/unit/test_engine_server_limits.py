"""The HTTP limits and what they mean to waitress (`segflow_engine.limits.ServerLimits.adjustments`).

Facts of waitress 3 encoded here (its `adjustments.py`, `server.py` and `parser.py`): `connection_limit`
counts the listening socket and the wake-up pipe besides the clients; a body of `max_request_body_size`
bytes or more is refused; `channel_timeout` and `cleanup_interval` are whole seconds.
"""

from __future__ import annotations

from waitress.adjustments import Adjustments

from segflow_engine.limits import LARGEST_UPLOAD_BYTES, WAITRESS_OWN_SOCKETS, ServerLimits
from segflow_engine.tempstore import FORM_OVERHEAD_BYTES, largest_input


def test_the_largest_body_is_the_temporary_buckets_largest_upload() -> None:
    assert largest_input("videoseg") + FORM_OVERHEAD_BYTES == LARGEST_UPLOAD_BYTES
    assert ServerLimits().max_body_bytes == LARGEST_UPLOAD_BYTES


def test_the_limits_are_waitress_adjustments_it_accepts() -> None:
    limits = ServerLimits(threads=8, max_connections=64, idle_timeout=900, backlog=16)
    adjusted = Adjustments(**limits.adjustments())  # waitress refuses an adjustment it does not know
    assert adjusted.threads == 8
    assert adjusted.connection_limit == 64 + WAITRESS_OWN_SOCKETS
    assert adjusted.channel_timeout == 900  # Function Compute's custom runtimes need >= 15 minutes
    assert adjusted.max_request_body_size == LARGEST_UPLOAD_BYTES + 1  # the limit itself is accepted
    assert adjusted.inbuf_overflow == limits.spool_bytes  # larger bodies wait in a temporary file
    assert adjusted.asyncore_use_poll is True  # select() would stop at 1024 descriptors
    assert adjusted.log_socket_errors is False
