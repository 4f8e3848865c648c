"""An FC-like handler context for running a handler outside Function Compute (`segflow invoke`).

It has what the FC python3.10 runtime gives a handler: `request_id`, `region`, `account_id`,
`credentials.{access_key_id, access_key_secret, security_token}`, `function.{name, handler, memory,
timeout}`, `service.{name, log_project, log_store, qualifier, version_id}` and
`get_remaining_time_in_millis()` counted down from the function timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from segflow.settings import Settings


@dataclass(frozen=True)
class FcCredentials:
    access_key_id: str | None
    access_key_secret: str | None = field(default=None, repr=False)
    security_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class FcFunction:
    name: str
    handler: str = "index.handler"
    memory: int = 512
    timeout: int = 120


@dataclass(frozen=True)
class FcService:
    name: str = ""
    log_project: str = ""
    log_store: str = ""
    qualifier: str = "LATEST"
    version_id: str = ""


@dataclass
class FcContext:
    """What FC passes as `context`; the deadline starts when the object is made."""

    request_id: str
    region: str
    account_id: str
    credentials: FcCredentials | None
    function: FcFunction
    service: FcService = field(default_factory=FcService)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False)
    started_at: float = field(default=-1.0, repr=False)

    def __post_init__(self) -> None:
        if self.started_at < 0:
            self.started_at = self.clock()

    def get_remaining_time_in_millis(self) -> int:
        elapsed = self.clock() - self.started_at
        return max(0, int((self.function.timeout - elapsed) * 1000))


def credentials_from_env(credential_env: Mapping[str, str]) -> FcCredentials | None:
    """`context.credentials` from the `ALIBABA_CLOUD_*` variables (None when no key is set, as on
    python3.12 where FC drops `credentials` from the context)."""
    key_id = credential_env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = credential_env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not key_id or not secret:
        return None
    return FcCredentials(key_id, secret, credential_env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)


def local_context(
    settings: Settings,
    function_name: str,
    *,
    timeout: int = 120,
    memory: int = 512,
    account_id: str = "0000000000000000",
    service_name: str = "segflow",
    clock: Callable[[], float] = time.monotonic,
) -> FcContext:
    """A context like FC's for one local invocation of `function_name`."""
    return FcContext(
        request_id=str(uuid.uuid4()),
        region=settings.fc_region or settings.region,
        account_id=account_id,
        credentials=credentials_from_env(settings.credential_env),
        function=FcFunction(name=function_name, handler="index.handler", memory=memory, timeout=timeout),
        service=FcService(name=service_name),
        clock=clock,
    )
