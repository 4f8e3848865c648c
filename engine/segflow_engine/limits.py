"""How much the HTTP side of the engine (and of the local URL server) may hold: one place for the defaults,
which `segflow engine --help` shows, and their translation into waitress's adjustments. Only the standard
library is imported, so the command's help stays light.

What waitress does with each bound, and why that bounds a slow client, is in shared/ARCHITECTURE.md
("The HTTP server").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

LOG = logging.getLogger("segflow_engine.limits")

MiB = 1024 * 1024
# The temporary bucket's largest upload: videoseg's 1 GiB input plus the form around it
# (`tempstore.largest_input("videoseg") + tempstore.FORM_OVERHEAD_BYTES`; a test holds them equal).
LARGEST_UPLOAD_BYTES = 1024 * MiB + 64 * 1024
# waitress's `connection_limit` counts every socket of its loop: its listening socket and its wake-up pipe
# besides the clients' connections (`BaseWSGIServer.readable`: `len(self._map) >= connection_limit`).
WAITRESS_OWN_SOCKETS = 2
SWEEP_SECONDS = 1  # how often idle connections are looked for (waitress's `cleanup_interval`, whole seconds)


@dataclass(frozen=True)
class ServerLimits:
    """What one server's HTTP side may hold. Defaults suit a local engine serving SDK clients."""

    threads: int = 32  # threads answering requests; model work runs elsewhere (EngineConfig.workers)
    max_connections: int = 512  # open client connections; beyond, newcomers wait in the backlog
    backlog: int = 1024  # the kernel's accept queue (capped by its somaxconn): bursts wait, never reset
    idle_timeout: int = 60  # whole seconds a connection may stay silent; Function Compute needs >= 900
    max_head_bytes: int = 64 * 1024  # request line + headers (beyond: 431)
    max_body_bytes: int = LARGEST_UPLOAD_BYTES  # any request body (beyond: 413, before it is read)
    max_call_body_bytes: int = MiB  # the body of an API call; only uploads may be larger (beyond: 413)
    spool_bytes: int = MiB  # a body larger than this is received into a temporary file, not memory

    def adjustments(self) -> dict[str, int | bool | str]:
        """The waitress adjustments (`waitress.adjustments.Adjustments`) these limits mean."""
        within = _within_file_limit(self)
        return {
            "threads": within.threads,
            "connection_limit": within.max_connections + WAITRESS_OWN_SOCKETS,
            "backlog": within.backlog,
            "channel_timeout": within.idle_timeout,
            "cleanup_interval": SWEEP_SECONDS,
            "max_request_header_size": within.max_head_bytes,
            # waitress refuses a body of `max_request_body_size` bytes or more: the limit itself is allowed.
            "max_request_body_size": within.max_body_bytes + 1,
            "inbuf_overflow": within.spool_bytes,
            "asyncore_use_poll": True,  # select() stops at 1024 descriptors
            "log_socket_errors": False,  # a client that resets is not an error of the server
            "ident": "segflow",
        }


def _within_file_limit(limits: ServerLimits) -> ServerLimits:
    """At most half the process's file-descriptor limit (models, inputs and results need the rest), so
    accepting never runs out of descriptors in the first place (macOS's default limit is 256)."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # not on Unix
        return limits
    if soft == resource.RLIM_INFINITY or limits.max_connections <= soft // 2:
        return limits
    LOG.info("max_connections %d lowered to %d (open-file limit %d)", limits.max_connections, soft // 2, soft)
    return replace(limits, max_connections=max(1, soft // 2))
