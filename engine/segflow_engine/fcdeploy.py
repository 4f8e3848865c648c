"""What the engine on Function Compute is configured with, read from the function's environment, and the
engine server built from it (`segflow_engine.fc` runs it).

Function Compute sets `FC_FUNCTION_NAME`, `FC_REGION`, `FC_ACCOUNT_ID` and the role's STS key in
`ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `_SECURITY_TOKEN` ("Environment variables"); s.yaml sets:

- `SEGFLOW_ENGINE_BUCKET`: the bucket the engine keeps its results, jobs and temporary inputs in; required
  inside FC, where an instance keeps nothing (unset outside FC: the state folder of one instance);
- `SEGFLOW_ENGINE_PREFIX`: their prefix (default `segflow-engine/`), the only place the role may write;
- `SEGFLOW_OSS_ENDPOINT`: OSS, as the layer reads it (default: `oss-<region>-internal` inside FC);
- `SEGFLOW_PRESIGN_ENDPOINT`: the host of result links (default: the OSS endpoint, as the functions that
  read them run in the same region);
- `SEGFLOW_FC_ENDPOINT`: FC's API, for the engine's own asynchronous invocations (default
  `https://{account_id}.{region}.fc.aliyuncs.com`);
- `SEGFLOW_ENGINE_AUTH`: `fc-gateway` behind a trigger with `authType: function`; `keys` (the default) with
  `SEGFLOW_ENGINE_ACCESS_KEYS` behind `authType: anonymous`.

Inputs come from public addresses only (the engine listens on 0.0.0.0), except the OSS endpoint and its
buckets (`<bucket>.<endpoint>`; inside FC the `-internal` endpoint resolves to a private address) and any
`--allow-input-host`.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from segflow.credentials import credentials_from_context
from segflow.errors import ConfigError
from segflow.settings import Settings
from segflow.signing import Credentials
from segflow_engine.auth import ACCESS_KEYS_ENV, AUTH_ENV, FC_MARKERS, EngineCredentials, gateway_trusted
from segflow_engine.cloud import EngineBucket, RoleKeys, oss_backends
from segflow_engine.cloudjobs import CloudJobs
from segflow_engine.command import server_limits
from segflow_engine.config import EngineConfig
from segflow_engine.fcinvoke import DEFAULT_ENDPOINT, FcAsyncInvoker, fc_endpoint
from segflow_engine.fcruntime import FcRuntime
from segflow_engine.fetch import AddressRule
from segflow_engine.pipeline import ActionsModule
from segflow_engine.rpc import job_error_code
from segflow_engine.server import Engine, EngineServer, load_actions_module

LOG = logging.getLogger("segflow_engine.fc")

BUCKET_ENV = "SEGFLOW_ENGINE_BUCKET"
PREFIX_ENV = "SEGFLOW_ENGINE_PREFIX"
DEFAULT_PREFIX = "segflow-engine/"


@dataclass(frozen=True)
class FcDeployment:
    """The engine's configuration on Function Compute (module docstring)."""

    in_function_compute: bool
    trust_gateway: bool
    bucket: str | None = None
    prefix: str = DEFAULT_PREFIX
    oss_endpoint: str = ""
    presign_endpoint: str | None = None
    function_name: str = ""
    fc_endpoint: str = ""
    role: Credentials | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> FcDeployment:
        """`ConfigError` for what cannot work: no bucket inside FC, no role key or function to queue jobs
        with, no keys to check behind an anonymous trigger, `fc-gateway` outside FC."""
        inside = all(environ.get(name, "").strip() for name in FC_MARKERS)
        trust = gateway_trusted(environ)
        if inside and not trust and not environ.get(ACCESS_KEYS_ENV, "").strip():
            raise ConfigError(
                f"behind a trigger with authType anonymous the engine checks its own keys: set "
                f"{ACCESS_KEYS_ENV} (or {AUTH_ENV}=fc-gateway behind authType function)"
            )
        bucket = environ.get(BUCKET_ENV, "").strip()
        if not bucket:
            if inside:
                raise ConfigError(
                    f"{BUCKET_ENV} is not set: on Function Compute the engine keeps its results and jobs "
                    "in OSS, as an instance may be stopped at any time"
                )
            return cls(inside, trust)
        settings = Settings.from_env(environ)
        region = settings.fc_region or settings.region
        template = environ.get("SEGFLOW_FC_ENDPOINT", "").strip() or DEFAULT_ENDPOINT
        return cls(
            inside,
            trust,
            bucket=bucket,
            prefix=_prefix(environ.get(PREFIX_ENV, "")),
            oss_endpoint=settings.oss_endpoint_for(),
            presign_endpoint=settings.presign_endpoint,
            function_name=_required(environ, "FC_FUNCTION_NAME", "names the function jobs are queued to"),
            fc_endpoint=fc_endpoint(
                template, account_id=environ.get("FC_ACCOUNT_ID", "").strip(), region=region
            ),
            role=credentials_from_context(None, settings.credential_env),
        )

    def addresses(self, extra_hosts: Sequence[str] = ()) -> AddressRule:
        """Public inputs only, but for the OSS endpoint, its buckets and `extra_hosts`."""
        hosts = {host.strip().lower() for host in extra_hosts if host.strip()}
        domains: set[str] = set()
        if self.oss_endpoint:
            parts = urlsplit(self.oss_endpoint)
            hosts.add(parts.netloc.lower())
            domains.add((parts.hostname or "").lower())
        return AddressRule(
            public_only=True, allowed_hosts=frozenset(hosts), allowed_domains=frozenset(domains)
        )


def _prefix(value: str) -> str:
    prefix = value.strip().strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise ConfigError(f"{PREFIX_ENV}={value!r} is not a usable key prefix")
    return f"{prefix}/" if prefix else DEFAULT_PREFIX


def _required(environ: Mapping[str, str], name: str, why: str) -> str:
    value = environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: it {why} (Function Compute sets it)")
    return value


def build_server(
    args: argparse.Namespace,
    deployment: FcDeployment,
    credentials: EngineCredentials,
    actions: ActionsModule | None = None,
) -> EngineServer:
    """The engine server of `deployment`, bound to `args.host:args.port` (not serving yet)."""
    config = EngineConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        limits=server_limits(args),
        input_addresses=deployment.addresses(args.allow_input_host),
        trust_gateway=deployment.trust_gateway,
        # No work after an answer: a call waits for its model (the function's timeout bounds it).
        sync_timeout_seconds=None if deployment.bucket else EngineConfig.sync_timeout_seconds,
    )
    initialize = _initializer(actions)
    if deployment.bucket is None or deployment.role is None:
        return EngineServer(
            config,
            credentials,
            actions,
            middleware=lambda engine: FcRuntime(engine, initialize=initialize, invoke=None),
        )
    keys = RoleKeys(deployment.role)
    bucket = EngineBucket(
        deployment.bucket,
        deployment.prefix,
        deployment.oss_endpoint,
        keys,
        presign_endpoint=deployment.presign_endpoint,
    )
    jobs = CloudJobs(bucket, FcAsyncInvoker(deployment.fc_endpoint, deployment.function_name, keys))

    def middleware(engine: Engine) -> FcRuntime:
        def run(payload: bytes) -> str:
            return jobs.run(payload, lambda job: engine.pool.run(lambda: engine.run_job(job)), job_error_code)

        return FcRuntime(engine, initialize=initialize, invoke=run, keys=keys)

    return EngineServer(
        config, credentials, actions, backends=oss_backends(bucket, jobs), middleware=middleware
    )


def _initializer(actions: ActionsModule | None) -> Callable[[], None]:
    """The Initializer hook: load the served actions' models (FC gives it up to the initializer's
    `timeout`; without the hook they load on first use)."""

    def initialize() -> None:
        module = actions if actions is not None else load_actions_module()
        warm_up = getattr(module, "warm_up", None)
        if callable(warm_up):
            started = time.monotonic()
            warm_up()
            LOG.info("models loaded in %.1f s", time.monotonic() - started)

    return initialize
