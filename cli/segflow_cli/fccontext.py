"""An FC-shaped handler context, to run a handler outside Function Compute (`segflow invoke`, `run`).

It has exactly what FC's Python runtime documents for `context` (`FcContext` on python3.10, `FcContext312` on
python3.12) and nothing more, so code that reaches for something FC does not give (AWS Lambda's
`get_remaining_time_in_millis()`, say) fails here as it would on FC. Each class has `__slots__`, so no
attribute can be added to an instance by accident either.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from segflow.settings import Settings

RUNTIMES = ("python3.10", "python3.12")


class FcCredentials:
    """`context.credentials`: the function role's STS key (python3.10)."""

    __slots__ = ("access_key_id", "access_key_secret", "security_token")

    def __init__(self, access_key_id: str, access_key_secret: str, security_token: str | None = None) -> None:
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.security_token = security_token

    def __repr__(self) -> str:  # never print the secret or the token
        return f"FcCredentials(access_key_id={self.access_key_id!r}, access_key_secret=<hidden>)"


class FcFunction:
    """`context.function`: name, handler, memory (MB) and timeout (seconds) as configured."""

    __slots__ = ("handler", "memory", "name", "timeout")

    def __init__(
        self, name: str, handler: str = "index.handler", memory: int = 512, timeout: int = 60
    ) -> None:
        self.name = name
        self.handler = handler
        self.memory = memory
        self.timeout = timeout


class FcService:
    """`context.service` (python3.10 only; FC 3.0 functions have no service, the fields stay empty)."""

    __slots__ = ("log_project", "log_store", "name", "qualifier", "version_id")

    def __init__(
        self,
        name: str = "",
        log_project: str = "",
        log_store: str = "",
        qualifier: str = "LATEST",
        version_id: str = "",
    ) -> None:
        self.name = name
        self.log_project = log_project
        self.log_store = log_store
        self.qualifier = qualifier
        self.version_id = version_id


class FcContext:
    """`context` of FC's python3.10 runtime."""

    __slots__ = ("account_id", "credentials", "function", "region", "request_id", "service")

    def __init__(
        self,
        *,
        request_id: str,
        region: str,
        account_id: str,
        function: FcFunction,
        credentials: FcCredentials | None,
        service: FcService,
    ) -> None:
        self.request_id = request_id
        self.region = region
        self.account_id = account_id
        self.function = function
        self.credentials = credentials
        self.service = service


class FcContext312:
    """`context` of FC's python3.12 runtime: no `credentials` (the keys are only in the
    `ALIBABA_CLOUD_ACCESS_KEY_*` variables there), no `service`."""

    __slots__ = ("account_id", "function", "region", "request_id")

    def __init__(self, *, request_id: str, region: str, account_id: str, function: FcFunction) -> None:
        self.request_id = request_id
        self.region = region
        self.account_id = account_id
        self.function = function


def credentials_from_env(credential_env: Mapping[str, str]) -> FcCredentials | None:
    """`context.credentials` from the `ALIBABA_CLOUD_*` variables (None when no key is set)."""
    key_id = credential_env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = credential_env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not key_id or not secret:
        return None
    return FcCredentials(key_id, secret, credential_env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)


def local_context(
    settings: Settings,
    function_name: str,
    *,
    timeout: int = 60,
    memory: int = 512,
    account_id: str = "0000000000000000",
    runtime: str = "python3.10",
) -> FcContext | FcContext312:
    """A context like FC's for one local invocation of `function_name`."""
    function = FcFunction(name=function_name, handler="index.handler", memory=memory, timeout=timeout)
    common = {
        "request_id": str(uuid.uuid4()),
        "region": settings.fc_region or settings.region,
        "account_id": account_id,
    }
    if runtime == "python3.12":
        return FcContext312(function=function, **common)
    if runtime != "python3.10":
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    return FcContext(
        function=function,
        credentials=credentials_from_env(settings.credential_env),
        service=FcService(),
        **common,
    )
