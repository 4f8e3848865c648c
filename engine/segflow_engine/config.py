"""What one engine is configured with: where it listens and how clients reach it, its model workers, the
time-to-live of its results, how inputs are fetched, and the bounds of its HTTP side."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from segflow_engine.fetch import IMAGE_POLICY, PICWISH_POLICY, VIDEO_POLICY, AddressRule, FetchPolicy
from segflow_engine.hosts import is_loopback
from segflow_engine.limits import ServerLimits
from segflow_engine.resultstore import PICWISH_RESULT_TTL_SECONDS, RESULT_TTL_SECONDS


@dataclass(frozen=True)
class EngineConfig:
    host: str = "127.0.0.1"
    port: int = 8780
    workers: int = 2
    state_dir: Path | None = None  # None: a temporary directory removed at shutdown
    public_url: str | None = None  # how clients reach the engine; default http://<host>:<port>
    cleanup_interval_seconds: float = 60.0
    result_ttl_seconds: int = RESULT_TTL_SECONDS
    picwish_result_ttl_seconds: int = PICWISH_RESULT_TTL_SECONDS
    image_policy: FetchPolicy = IMAGE_POLICY
    video_policy: FetchPolicy = VIDEO_POLICY
    picwish_policy: FetchPolicy = PICWISH_POLICY
    # A synchronous call whose model is not done after this is answered 408 `Timeout` (a service code).
    # None waits for the model: an engine that must do no work after its answer (Function Compute, where
    # the function's own timeout bounds a call) cannot leave a model running behind a 408.
    sync_timeout_seconds: float | None = 300.0
    qps: float | None = None  # per AccessKeyId and action (PicWish: per AppCode); None never throttles
    limits: ServerLimits = field(default_factory=ServerLimits)  # the HTTP side's threads, connections, sizes
    # Where input downloads may connect; None: public addresses only when `host` is not loopback.
    input_addresses: AddressRule | None = None
    # Trust the gateway in front (Function Compute's HTTP trigger with authType function) to have checked
    # every signature: `segflow_engine.auth.gateway_trusted` allows it inside Function Compute only.
    trust_gateway: bool = False

    def fetch_policy(self, policy: FetchPolicy) -> FetchPolicy:
        """`policy` (one of the three above) under this engine's address rule."""
        rule = self.input_addresses or AddressRule(public_only=not is_loopback(self.host))
        return replace(policy, addresses=rule)
