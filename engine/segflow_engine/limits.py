"""How much the engine's HTTP side may hold (`segflow_engine.httpd`): one place for the defaults, which
`segflow engine --help` shows (only `dataclasses` is imported, so the command stays light)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerLimits:
    """What one engine's HTTP side may hold. Defaults suit a local engine serving SDK clients."""

    backlog: int = 1024  # the kernel's accept queue (capped by its somaxconn): bursts wait, never reset
    threads: int = 32  # handler threads; model work runs elsewhere (EngineConfig.workers)
    max_connections: int = 512  # open sockets, idle or not
    max_pending: int = 256  # complete requests waiting for a thread; beyond: 503
    header_timeout: float = 10.0  # request line + headers, from the connection or its first byte
    body_timeout: float = 30.0  # the body, after the headers
    idle_timeout: float = 60.0  # a keep-alive connection between requests
    write_timeout: float = 60.0  # one write of the answer (a client that reads nothing is dropped)
    max_head_bytes: int = 64 * 1024
    max_body_bytes: int = 1024 * 1024
    # Streamed bodies (the temporary bucket's uploads, up to 1 GiB) are read by a thread, not held in memory:
    max_streams: int | None = None  # streamed bodies read at once; None: half the threads (beyond: 503)
    stream_read_timeout: float = 30.0  # the longest silence within a streamed body
    stream_timeout: float = 1800.0  # a whole streamed body (1 GiB at 0.6 MB/s; an upload grant's life)

    @property
    def stream_slots(self) -> int:
        """How many streamed bodies may be read at once: never the whole pool, so they cannot starve it."""
        if self.max_streams is not None:
            return max(1, min(self.max_streams, self.threads))
        return max(1, self.threads // 2)
