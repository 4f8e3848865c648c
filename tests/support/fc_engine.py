"""The platform around the engine on Function Compute, on loopback: what the engine's instances see.

    with FcPlatform() as platform:
        env = platform.function_env()                     # what FC and s.yaml give an instance
        ... start instances with `env` (in-process, or the unpacked package) ...
        platform.serve(["http://127.0.0.1:9001", "http://127.0.0.1:9002"])   # initializes them
        platform.trigger.base_url        # the HTTP trigger (authType: function) the callers sign for
        platform.fc                 # the FC API: the engine queues its jobs there, FC delivers POST /invoke
        platform.oss                # the bucket the engine keeps its state in

Each part is a stand-in built from FC's and OSS's documents (tests/support/fc_trigger.py, fc_standin.py,
oss_server.py). `serve` does what FC does with a new instance before routing calls to it: it calls the
Initializer (`POST /initialize` with `x-fc-control-path: /initialize`, "Lifecycle hooks for function
instances in a custom runtime") and requires a 2xx.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType

import requests

from segflow.signing import Credentials
from tests.support.fake_api import new_request_id
from tests.support.fc_standin import ACCOUNT_ID, FcStandIn, FunctionContext
from tests.support.fc_trigger import FcHttpTrigger
from tests.support.oss_server import OssServer

BUCKET = "segflow-demo"
PREFIX = "segflow-engine/"
FUNCTION = "segflow-engine"
REGION = "cn-shanghai"
ENGINE_ROLE = Credentials("STS.NEngineRoleKey", "engine-sts-secret", "CAIS+engine/token=")  # its role
CALLER = Credentials("STS.NCallerRoleKey", "caller-sts-secret", "CAIS+caller/token=")  # the functions'
INITIALIZE_SECONDS = 120.0  # s.yaml's initializer timeout


class FcPlatform:
    """OSS, the FC API and (after `serve`) the HTTP trigger; a context manager."""

    def __init__(self) -> None:
        self.context = FunctionContext(FUNCTION, ENGINE_ROLE, region=REGION)
        keys = {
            ENGINE_ROLE.access_key_id: (ENGINE_ROLE.access_key_secret, ENGINE_ROLE.security_token or ""),
            CALLER.access_key_id: (CALLER.access_key_secret, CALLER.security_token or ""),
        }
        self.oss = OssServer(keys, buckets=(BUCKET,))
        self.fc = FcStandIn(secrets={ENGINE_ROLE.access_key_id: ENGINE_ROLE.access_key_secret})
        self._trigger: FcHttpTrigger | None = None

    def __enter__(self) -> FcPlatform:
        self.oss.__enter__()
        self.fc.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.fc.__exit__(exc_type, exc, tb)
        finally:
            if self._trigger is not None:
                self._trigger.__exit__(exc_type, exc, tb)
            self.oss.__exit__(exc_type, exc, tb)

    @property
    def trigger(self) -> FcHttpTrigger:
        if self._trigger is None:
            raise RuntimeError("no instance is served yet: call serve()")
        return self._trigger

    def function_env(self, **extra: str) -> dict[str, str]:
        """An instance's environment: FC's own variables ("Environment variables": the function, region,
        account and the role's STS key) and what s.yaml's engine resource sets, pointed at the stand-ins."""
        return {
            "FC_FUNCTION_NAME": FUNCTION,
            "FC_REGION": REGION,
            "FC_ACCOUNT_ID": ACCOUNT_ID,
            "ALIBABA_CLOUD_ACCESS_KEY_ID": ENGINE_ROLE.access_key_id,
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": ENGINE_ROLE.access_key_secret,
            "ALIBABA_CLOUD_SECURITY_TOKEN": ENGINE_ROLE.security_token or "",
            "SEGFLOW_ENGINE_AUTH": "fc-gateway",
            "SEGFLOW_ENGINE_BUCKET": BUCKET,
            "SEGFLOW_ENGINE_PREFIX": PREFIX,
            "SEGFLOW_REGION": REGION,
            "SEGFLOW_OSS_ENDPOINT": self.oss.endpoint,
            "SEGFLOW_FC_ENDPOINT": self.fc.url,
            **extra,
        }

    def serve(self, instances: Sequence[str]) -> FcHttpTrigger:
        """Initialize each instance as FC does, then route the trigger and asynchronous events to them."""
        for instance in instances:
            initialize(instance, self.context)
        self.fc.deploy(FUNCTION, instances=tuple(instances), context=self.context)
        keys = {CALLER.access_key_id: (CALLER.access_key_secret, CALLER.security_token or "")}
        self._trigger = FcHttpTrigger(list(instances), keys=keys, context=self.context)
        self._trigger.__enter__()
        return self._trigger

    def objects(self, under: str = "") -> dict[str, bytes]:
        """The engine's objects, by key below its prefix."""
        prefix = PREFIX + under
        return {k[len(PREFIX) :]: v for k, v in self.oss.objects(BUCKET).items() if k.startswith(prefix)}


def initialize(instance: str, context: FunctionContext) -> requests.Response:
    headers: Mapping[str, str] = context.headers(new_request_id(), "/initialize")
    response = requests.post(f"{instance}/initialize", headers=dict(headers), timeout=INITIALIZE_SECONDS)
    if not 200 <= response.status_code < 300:
        raise AssertionError(f"the Initializer of {instance} failed: {response.status_code} {response.text}")
    return response
