"""`Settings`: the one place that reads the environment, once, at cold start.

Every other module receives a `Settings` (or the values it needs) as an argument. Each field below says
which variable sets it, its default and what it means; the README table is built from these docstrings.
Invalid values raise `ConfigError` naming the variable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from segflow.errors import ConfigError
from segflow.values import Value

DEFAULT_IMAGESEG_ENDPOINT = "https://imageseg.cn-shanghai.aliyuncs.com"
DEFAULT_VIDEOSEG_ENDPOINT = "https://videoseg.cn-shanghai.aliyuncs.com"
DEFAULT_PICWISH_ENDPOINT = "https://picwish.market.alicloudapi.com"
DEFAULT_OPENPLATFORM_ENDPOINT = "https://openplatform.aliyuncs.com"
DEFAULT_REGION = "cn-shanghai"
INPUT_URL_MODES = ("upload", "presign")
LOG_LEVELS = ("debug", "info", "warning", "error")
SIGNATURE_VERSIONS = ("v3", "v1", "fc-trigger")

CREDENTIAL_VARIABLES = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN",
)
"""Read into `Settings.credential_env` only; where FC python3.12 (and local runs) put the keys."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class Settings(Value):
    """Configuration of both functions, `segflow invoke` and `segflow run`. Its repr never shows the AppCode
    or the keys."""

    input_prefix: str = "incoming/"
    """`SEGFLOW_INPUT_PREFIX` (default `incoming/`): uploads under this prefix are processed; it must match
    the OSS trigger's filter in s.yaml. A trailing `/` is added when missing. It must not overlap segflow's
    own prefixes (in either direction): results written inside the input would trigger themselves."""
    output_prefix: str = "segmented/"
    """`SEGFLOW_OUTPUT_PREFIX` (default `segmented/`): results go to `<output>/<source key>/<action>/…`.
    Keys under it are never processed, whatever the trigger says."""
    jobs_prefix: str = "segflow-jobs/"
    """`SEGFLOW_JOBS_PREFIX` (default `segflow-jobs/`): idempotency and async job records."""
    failed_prefix: str = "segflow-failed/"
    """`SEGFLOW_FAILED_PREFIX` (default `segflow-failed/`): one failure record `<failed>/<source key>.json`
    per object that cannot be processed."""
    imageseg_endpoint: str = DEFAULT_IMAGESEG_ENDPOINT
    """`SEGFLOW_IMAGESEG_ENDPOINT` (default `https://imageseg.cn-shanghai.aliyuncs.com`): the imageseg API;
    point it at `http://127.0.0.1:<port>` for the local engine. `https://` is assumed without a scheme."""
    videoseg_endpoint: str = DEFAULT_VIDEOSEG_ENDPOINT
    """`SEGFLOW_VIDEOSEG_ENDPOINT` (default `https://videoseg.cn-shanghai.aliyuncs.com`): the videoseg API."""
    picwish_endpoint: str = DEFAULT_PICWISH_ENDPOINT
    """`SEGFLOW_PICWISH_ENDPOINT` (default `https://picwish.market.alicloudapi.com`): the PicWish API
    (Alibaba Cloud Marketplace)."""
    signature_version: str = "v3"
    """`SEGFLOW_SIGNATURE_VERSION` (`v3` default, `v1` or `fc-trigger`): how imageseg/videoseg requests are
    signed (v3 = ACS3-HMAC-SHA256 as today's SDKs; v1 = HMAC-SHA1 RPC signature as the older SDKs;
    fc-trigger = as a Function Compute HTTP trigger with `authType: function` checks it, for the endpoints
    set to the trigger URL of the engine deployed on FC: the function's own STS keys, no shared secret)."""
    picwish_appcode: str | None = None
    """`SEGFLOW_PICWISH_APPCODE` (no default): the Marketplace AppCode for PicWish rules. A secret: set it in
    the console or with `s deploy` variables, never in s.yaml; never printed."""
    rules: tuple[Mapping[str, Any], ...] = ()
    """`SEGFLOW_RULES` (default: none, i.e. images → SegmentCommonImage, videos → SegmentVideoBody): a JSON
    list of routing rule objects, kept as parsed here (each must be a JSON object); `segflow.routing` reads
    them."""
    oversize: str = "fit"
    """`SEGFLOW_OVERSIZE` (`fit` default, or `reject`): an image beyond the action's resolution limits is
    segmented on a downsized copy and the mask applied at full size (`fit`), or recorded as a failure with
    the service's own error code (`reject`)."""
    input_url: str = "upload"
    """`SEGFLOW_INPUT_URL` (`upload` default, or `presign`): how an input reaches imageseg/videoseg.
    `upload` does what the official SDK's `*_advance` methods do (`AuthorizeFileUpload`, then a form POST of
    the object to the service's own temporary bucket): it works on every account. `presign` hands the
    service a presigned GET URL of the object on `SEGFLOW_PRESIGN_ENDPOINT`. PicWish (a Marketplace API)
    always gets a presigned URL."""
    presign_endpoint: str | None = None
    """`SEGFLOW_PRESIGN_ENDPOINT` (default: the bucket region's public default domain
    `https://oss-<region>.aliyuncs.com`): the host of presigned input URLs. A custom domain bound to the
    bucket (`https://img.example.com`) is used as a CNAME, an OSS endpoint (even `-internal`) as is. Only
    the URL handed to the service uses it; reads and writes keep `SEGFLOW_OSS_ENDPOINT`."""
    openplatform_endpoint: str = DEFAULT_OPENPLATFORM_ENDPOINT
    """`SEGFLOW_OPENPLATFORM_ENDPOINT` (default `https://openplatform.aliyuncs.com`, or the imageseg
    endpoint when that is not an Alibaba Cloud host, i.e. a local engine): where `AuthorizeFileUpload` is
    called for the `upload` input path."""
    presign_seconds: int = 1800
    """`SEGFLOW_PRESIGN_SECONDS` (default 1800, 60…604800): lifetime of the presigned GET URL of the input
    handed to the API (async video jobs may fetch it minutes later)."""
    region: str = DEFAULT_REGION
    """`SEGFLOW_REGION` (default `cn-shanghai`): the vision service's region: the region inputs must be in
    when `require_region` holds, the `RegionId` of `AuthorizeFileUpload`, and the OSS region used outside
    FC."""
    require_region: bool = True
    """`SEGFLOW_REQUIRE_REGION` (default: true when the imageseg and videoseg endpoints are Alibaba's
    `*.aliyuncs.com`, false otherwise): refuse objects whose bucket is not in `region` without calling the
    API (`InvalidImage.Region` / `InvalidFile.Region`, as the service would). Only with
    `SEGFLOW_INPUT_URL=presign`: an uploaded input is read from the service's own temporary bucket."""
    qps: float = 2.0
    """`SEGFLOW_QPS` (default 2): calls per second to the vision API per process (the account's default
    limit on pay-as-you-go is 2 QPS; over-limit calls fail with `Throttling.User`)."""
    collect_concurrency: int = 4
    """`SEGFLOW_COLLECT_CONCURRENCY` (default 4, 1…64): jobs the collector polls and copies at once."""
    lease_seconds: int = 300
    """`SEGFLOW_LEASE_SECONDS` (default 300, 10…86400): how long a collector's claim on a job record holds;
    a run that crashed loses its claims after this, so keep it above the collector's timeout."""
    max_resubmits: int = 3
    """`SEGFLOW_MAX_RESUBMITS` (default 3, 0…20): resubmissions of a job the service ended with
    `LIMIT_RETRY_FAILED` before it is recorded as failed."""
    log_level: str = "INFO"
    """`SEGFLOW_LOG_LEVEL` (`DEBUG`, `INFO` default, `WARNING`, `ERROR`): the level of segflow's own log lines
    (the `segflow` loggers) in the functions; the `segflow` command reads it too (`-v` is `DEBUG`). Secrets
    are redacted at every level (`segflow.logs`)."""
    oss_endpoint: str | None = None
    """`SEGFLOW_OSS_ENDPOINT` (default: derived): the OSS endpoint to use for every bucket. Unset, it is
    `oss-<region>-internal.aliyuncs.com` inside FC for buckets in the function's region, and
    `oss-<region>.aliyuncs.com` otherwise."""
    fc_region: str | None = None
    """`FC_REGION` (set by Function Compute): the function's region; with `FC_FUNCTION_NAME` it tells that
    the code runs inside FC."""
    fc_function_name: str | None = None
    """`FC_FUNCTION_NAME` (set by Function Compute)."""
    credential_env: Mapping[str, str] = MappingProxyType({})
    """`ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `_SECURITY_TOKEN`: the keys where FC python3.12 and local
    runs provide them (python3.10 passes them in `context.credentials`). Never printed."""

    def __repr__(self) -> str:
        hidden = {"picwish_appcode", "credential_env"}
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if n not in hidden)
        return f"Settings({shown}, picwish_appcode=<hidden>, credential_env=<hidden>)"

    # -- derived -------------------------------------------------------------------------------------
    @property
    def in_function_compute(self) -> bool:
        return bool(self.fc_region or self.fc_function_name)

    @property
    def endpoints_are_alibaba(self) -> bool:
        return _is_alibaba(self.imageseg_endpoint) and _is_alibaba(self.videoseg_endpoint)

    @property
    def secret_values(self) -> tuple[str, ...]:
        """The configured secrets (AppCode, AccessKey secret, STS token) logs and records must never show."""
        return tuple(v for v in (self.picwish_appcode, *self.credential_env.values()) if v)

    @property
    def own_prefixes(self) -> tuple[str, str, str]:
        """Prefixes segflow writes to; objects under them are never processed."""
        return (self.output_prefix, self.jobs_prefix, self.failed_prefix)

    def oss_endpoint_for(self, region: str | None = None) -> str:
        """The OSS endpoint (with scheme) for a bucket in `region` (default: the function's or `region`)."""
        if self.oss_endpoint:
            return self.oss_endpoint
        bucket_region = region or self.fc_region or self.region
        if self.in_function_compute and bucket_region == (self.fc_region or self.region):
            return f"https://oss-{bucket_region}-internal.aliyuncs.com"
        return f"https://oss-{bucket_region}.aliyuncs.com"

    def presign_endpoint_for(self, region: str | None = None) -> str:
        """The host (with scheme) of presigned URLs handed to a service, for a bucket in `region`: the
        configured one, else the public default domain of the bucket's region, never `-internal` on its
        own (the vision service fetches from outside the function's network)."""
        if self.presign_endpoint:
            return self.presign_endpoint
        return f"https://oss-{region or self.fc_region or self.region}.aliyuncs.com"

    # -- construction --------------------------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Build from a mapping such as `os.environ`; unset or empty variables take their defaults."""
        env = _Env(environ)
        endpoints = _endpoint_fields(env)
        return cls(
            **_prefix_fields(env),
            **endpoints,
            signature_version=env.choice("SEGFLOW_SIGNATURE_VERSION", "v3", SIGNATURE_VERSIONS),
            picwish_appcode=env.get("SEGFLOW_PICWISH_APPCODE"),
            rules=_rules(env.get("SEGFLOW_RULES")),
            oversize=env.choice("SEGFLOW_OVERSIZE", "fit", ("fit", "reject")),
            input_url=env.choice("SEGFLOW_INPUT_URL", "upload", INPUT_URL_MODES),
            presign_seconds=env.integer("SEGFLOW_PRESIGN_SECONDS", 1800, 60, 604800),
            region=_region(env.get("SEGFLOW_REGION"), "SEGFLOW_REGION") or DEFAULT_REGION,
            require_region=_require_region(
                env, endpoints["imageseg_endpoint"], endpoints["videoseg_endpoint"]
            ),
            qps=_float(env.get("SEGFLOW_QPS"), 2.0, "SEGFLOW_QPS"),
            collect_concurrency=env.integer("SEGFLOW_COLLECT_CONCURRENCY", 4, 1, 64),
            lease_seconds=env.integer("SEGFLOW_LEASE_SECONDS", 300, 10, 86400),
            max_resubmits=env.integer("SEGFLOW_MAX_RESUBMITS", 3, 0, 20),
            log_level=log_level(env.get("SEGFLOW_LOG_LEVEL"), "INFO"),
            fc_region=_region(env.get("FC_REGION"), "FC_REGION"),
            fc_function_name=env.get("FC_FUNCTION_NAME"),
            credential_env=MappingProxyType(
                {name: value for name in CREDENTIAL_VARIABLES if (value := env.get(name)) is not None}
            ),
        )


class _Env:
    """The environment with unset and empty variables alike (stripped), and typed readers that name the
    variable in their error."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._values = {name: value.strip() for name, value in environ.items() if value and value.strip()}

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    def prefix(self, name: str, default: str) -> str:
        return _prefix(self.get(name), default, name)

    def endpoint(self, name: str, default: str) -> str:
        return _endpoint(self.get(name), default, name)

    def optional_endpoint(self, name: str) -> str | None:
        return _endpoint(self.get(name), "", name) if self.get(name) else None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return _int(self.get(name), default, low, high, name)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        return _choice(self.get(name), default, choices, name)


def _prefix_fields(env: _Env) -> dict[str, str]:
    fields = {
        "input_prefix": env.prefix("SEGFLOW_INPUT_PREFIX", "incoming/"),
        "output_prefix": env.prefix("SEGFLOW_OUTPUT_PREFIX", "segmented/"),
        "jobs_prefix": env.prefix("SEGFLOW_JOBS_PREFIX", "segflow-jobs/"),
        "failed_prefix": env.prefix("SEGFLOW_FAILED_PREFIX", "segflow-failed/"),
    }
    _check_prefixes(*fields.values())
    return fields


def _endpoint_fields(env: _Env) -> dict[str, Any]:
    imageseg = env.endpoint("SEGFLOW_IMAGESEG_ENDPOINT", DEFAULT_IMAGESEG_ENDPOINT)
    return {
        "imageseg_endpoint": imageseg,
        "videoseg_endpoint": env.endpoint("SEGFLOW_VIDEOSEG_ENDPOINT", DEFAULT_VIDEOSEG_ENDPOINT),
        "picwish_endpoint": env.endpoint("SEGFLOW_PICWISH_ENDPOINT", DEFAULT_PICWISH_ENDPOINT),
        "oss_endpoint": env.optional_endpoint("SEGFLOW_OSS_ENDPOINT"),
        "presign_endpoint": env.optional_endpoint("SEGFLOW_PRESIGN_ENDPOINT"),
        # A local engine serves AuthorizeFileUpload beside the vision APIs.
        "openplatform_endpoint": env.endpoint(
            "SEGFLOW_OPENPLATFORM_ENDPOINT",
            DEFAULT_OPENPLATFORM_ENDPOINT if _is_alibaba(imageseg) else imageseg,
        ),
    }


def _require_region(env: _Env, imageseg: str, videoseg: str) -> bool:
    raw = env.get("SEGFLOW_REQUIRE_REGION")
    if raw is not None:
        return _bool(raw, "SEGFLOW_REQUIRE_REGION")
    return _is_alibaba(imageseg) and _is_alibaba(videoseg)


# -- parsing helpers ---------------------------------------------------------------------------------


def log_level(value: str | None, default: str) -> str:
    """`SEGFLOW_LOG_LEVEL`'s value as a `logging` level name (the command reads it with this too)."""
    return _choice(value, default.lower(), LOG_LEVELS, "SEGFLOW_LOG_LEVEL").upper()


def _is_alibaba(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host.endswith(".aliyuncs.com")


def _prefix(value: str | None, default: str, name: str) -> str:
    if value is None:
        return default
    prefix = value.lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not prefix:
        raise ConfigError(f"{name} must not be empty or '/'")
    if any(part in (".", "..") for part in prefix.split("/")) or "//" in prefix:
        raise ConfigError(f"{name}={value!r} is not a usable key prefix")
    return prefix


def _check_prefixes(input_prefix: str, output: str, jobs: str, failed: str) -> None:
    """Refuse prefixes that overlap: an input under an own prefix would be skipped forever, an own prefix
    under the input would have segflow process (and pay for) its own writes."""
    named = {"SEGFLOW_OUTPUT_PREFIX": output, "SEGFLOW_JOBS_PREFIX": jobs, "SEGFLOW_FAILED_PREFIX": failed}
    for name, prefix in named.items():
        if input_prefix.startswith(prefix):
            # Every upload would count as our own output and be skipped forever.
            raise ConfigError(f"SEGFLOW_INPUT_PREFIX={input_prefix!r} lies under {name}={prefix!r}")
        if prefix.startswith(input_prefix):
            raise ConfigError(
                f"{name}={prefix!r} lies under SEGFLOW_INPUT_PREFIX={input_prefix!r}: segflow's own writes "
                "would be taken for uploads; use prefixes that do not contain each other"
            )
        for other_name, other in named.items():
            if other_name != name and other.startswith(prefix):
                raise ConfigError(f"{other_name}={other!r} overlaps {name}={prefix!r}; use distinct prefixes")


def _endpoint(value: str | None, default: str, name: str) -> str:
    if value is None:
        return default
    endpoint = value if "://" in value else f"https://{value}"
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r} is not an http(s) endpoint such as https://host[:port]")
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} has an invalid port") from exc
    return endpoint.rstrip("/")


def _bool(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} must be true or false")


def _choice(value: str | None, default: str, choices: tuple[str, ...], name: str) -> str:
    if value is None:
        return default
    lowered = value.lower()
    if lowered not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return lowered


def _int(value: str | None, default: int, low: int, high: int, name: str) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not an integer") from exc
    if not low <= number <= high:
        raise ConfigError(f"{name}={number} is outside {low}…{high}")
    return number


def _float(value: str | None, default: float, name: str) -> float:
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a number") from exc
    if not 0 < number <= 1000:  # also refuses nan and inf
        raise ConfigError(f"{name}={value!r} must be > 0 and <= 1000")
    return number


def _region(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    if not all(part.isalnum() for part in value.split("-")) or not value.islower():
        raise ConfigError(f"{name}={value!r} is not a region id such as cn-shanghai")
    return value


def _rules(value: str | None) -> tuple[Mapping[str, Any], ...]:
    if value is None:
        return ()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"SEGFLOW_RULES is not valid JSON: {exc.msg} at position {exc.pos}") from exc
    if not isinstance(parsed, list) or not all(isinstance(rule, dict) for rule in parsed):
        raise ConfigError("SEGFLOW_RULES must be a JSON list of rule objects")
    return tuple(parsed)
