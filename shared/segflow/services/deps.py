"""`Deps`: everything the services talk to, built once per warm instance by the handlers."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from segflow.deadline import Deadline
from segflow.errors import ConfigError, SegflowError
from segflow.jobqueue import JobQueue
from segflow.layout import BucketLayout
from segflow.records import RecordStore
from segflow.retry import RetryPolicy
from segflow.routing import Rule, parse_rules
from segflow.settings import Settings
from segflow.storage.base import Storage

if TYPE_CHECKING:
    import requests

    from segflow.client import PicWishClient, VisionClient
    from segflow.signing import Credentials

LOGGER_NAME = "segflow.services"

# How long a claim or a publish lock lasts when the invocation's deadline is unknown (a script calling the
# services directly): longer than any function timeout in our s.yaml.
DEFAULT_CLAIM_SECONDS = 900.0
# Added to the invocation's remaining time for a claim or a lock: FC stops the owner at its deadline, and
# this covers the clocks of two instances disagreeing (NTP keeps them within milliseconds).
CLAIM_MARGIN_SECONDS = 60.0
# How long an upload record may sit unclaimed in `submitting` before the collector re-drives it (and
# `segflow status` calls it stuck).
DEFAULT_STALL_SECONDS = 300.0


class StorageFactory(Protocol):
    """The storage of one bucket; `region` (from the event) picks the endpoint of a bucket elsewhere."""

    def __call__(self, bucket: str, region: str | None = None) -> Storage: ...


# The in-place retry of the storage writes after a paid call (immutable: every Deps shares it).
STORAGE_RETRY = RetryPolicy(max_attempts=3, base_delay=0.2, max_delay=1.0, max_total=5.0)


class Deps:
    """The collaborators of the services. `storage_for(bucket, region)` returns one bucket's storage; the
    keyword arguments after `http` (`TUNABLES`) are what a test makes small."""

    claim_seconds: float
    """A claim's or a publish lock's life when the deadline is unknown (`hold_seconds`)."""
    claim_margin_seconds: float
    """Added to the invocation's remaining time for a claim or a lock."""
    max_event_attempts: int
    """Deliveries of one object before a retryable failure is recorded as final (FC's default is the
    first invocation plus 3 async retries, after which the event is dropped)."""
    download_timeout: float
    """Socket timeout of result downloads."""
    stall_seconds: float
    """An upload unclaimed in `submitting`, or a deferred record, this long is taken up by the collector
    (FC's own retry of the event gets this long to come first)."""
    collect_stop_seconds: float
    """The collector claims no new job once the invocation has less than this left."""
    record_seconds: float
    """on_upload starts a record only while this much of the invocation is left."""
    copy_margin_seconds: float
    """A result copy still running with less than this left is abandoned."""
    publish_wait_seconds: float
    """How long a publisher waits for another one of the same key (`services.publish`)."""
    storage_retry: RetryPolicy
    """Backoff of the writes that follow a paid call, retried in place (handing the record back to FC
    instead would pay for the call again)."""
    secrets: Callable[[], tuple[str, ...]]
    """The current secret values (AccessKey secret, STS token, AppCode) to mask in stored messages."""
    buckets: tuple[str, ...]
    """The buckets the collector scans when the timer event names none."""

    TUNABLES = (
        "picwish",
        "clock",
        "logger",
        "claim_seconds",
        "claim_margin_seconds",
        "max_event_attempts",
        "download_timeout",
        "stall_seconds",
        "collect_stop_seconds",
        "record_seconds",
        "copy_margin_seconds",
        "publish_wait_seconds",
        "storage_retry",
        "secrets",
        "buckets",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        storage_for: StorageFactory,
        vision: VisionClient,
        http: requests.Session,
        picwish: PicWishClient | None = None,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
        claim_seconds: float = DEFAULT_CLAIM_SECONDS,
        claim_margin_seconds: float = CLAIM_MARGIN_SECONDS,
        max_event_attempts: int = 4,
        download_timeout: float = 60.0,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        collect_stop_seconds: float = 15.0,
        record_seconds: float = 45.0,
        copy_margin_seconds: float = 5.0,
        publish_wait_seconds: float = 10.0,
        storage_retry: RetryPolicy | None = None,
        secrets: Callable[[], tuple[str, ...]] | None = None,
        buckets: tuple[str, ...] = (),
    ) -> None:
        self.settings = settings
        self.storage_for = storage_for
        self.vision = vision
        self.http = http
        self.picwish = picwish
        self.clock = clock
        self.logger = logger or logging.getLogger(LOGGER_NAME)
        self.claim_seconds = claim_seconds
        self.claim_margin_seconds = claim_margin_seconds
        self.max_event_attempts = max_event_attempts
        self.download_timeout = download_timeout
        self.stall_seconds = stall_seconds
        self.collect_stop_seconds = collect_stop_seconds
        self.record_seconds = record_seconds
        self.copy_margin_seconds = copy_margin_seconds
        self.publish_wait_seconds = publish_wait_seconds
        self.storage_retry = storage_retry or STORAGE_RETRY
        self.secrets = secrets or (lambda: ())
        self.buckets = buckets
        self.rules: tuple[Rule, ...] = parse_rules(list(settings.rules))
        self.layout = BucketLayout(
            settings.output_prefix, settings.jobs_prefix, settings.failed_prefix, settings.input_prefix
        )

    def hold_seconds(self, deadline: Deadline) -> float:
        """How long a claim or a publish lock this invocation takes must last: past the moment FC stops the
        invocation (its deadline) by a margin, so no other owner can take it while this one still runs."""
        remaining = deadline.remaining()
        return self.claim_seconds if math.isinf(remaining) else remaining + self.claim_margin_seconds

    def records(self, storage: Storage) -> RecordStore:
        """The idempotency records of one bucket (they read its job queue: see `RecordStore.begin`)."""
        queue = self.queue(storage)
        return RecordStore(
            storage, self.layout, clock=self.clock, claim_seconds=self.claim_seconds, queued=queue.load
        )

    def queue(self, storage: Storage) -> JobQueue:
        """The pending jobs and leases of one bucket."""
        return JobQueue(
            storage, self.layout, clock=self.clock, lease_seconds=float(self.settings.lease_seconds)
        )

    def picwish_client(self) -> PicWishClient:
        if self.picwish is None:
            raise ConfigError(
                "a routing rule chose PicWish but SEGFLOW_PICWISH_APPCODE is not set",
                code="InvalidConfiguration",
            )
        return self.picwish

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        context: object | None = None,
        *,
        storage_factory: StorageFactory | None = None,
        buckets: tuple[str, ...] = (),
    ) -> Deps:
        """The real collaborators: OSS storage, the signed vision client, PicWish. `storage_factory`
        replaces OSS (the local tools pass directory-backed buckets); `buckets` are the ones the collector
        scans when the timer names none."""
        import requests

        from segflow.credentials import credentials_from_context

        def credentials() -> Credentials:
            # Re-read per call: FC rotates the STS token in the context of a warm instance.
            return credentials_from_context(context, settings.credential_env)

        def secrets() -> tuple[str, ...]:
            values = list(settings.secret_values)
            try:
                current: Credentials | None = credentials()
            except SegflowError:
                current = None
            if current is not None:
                values += [current.access_key_secret, current.security_token or ""]
            return tuple(v for v in values if v)

        vision, picwish = _clients(settings, credentials)
        return cls(
            settings=settings,
            storage_for=_cached_storage(settings, context, storage_factory),
            secrets=secrets,
            vision=vision,
            http=requests.Session(),
            picwish=picwish,
            buckets=buckets,
        )


def _clients(
    settings: Settings, credentials: Callable[[], Credentials]
) -> tuple[VisionClient, PicWishClient | None]:
    """The signed vision client and, when an AppCode is configured, PicWish's; each product keeps its own
    process-wide limiter at `SEGFLOW_QPS`."""
    from segflow.client import Endpoints, PicWishClient, VisionClient
    from segflow.ratelimit import RateLimiter

    vision = VisionClient(
        credentials,
        endpoints=Endpoints(
            imageseg=settings.imageseg_endpoint,
            videoseg=settings.videoseg_endpoint,
            picwish=settings.picwish_endpoint,
            openplatform=settings.openplatform_endpoint,
        ),
        signature_version=settings.signature_version,
        rate_limiter=RateLimiter.shared(settings.qps),
        # AuthorizeFileUpload's own quota is not documented: as cautious as the vision APIs'.
        upload_rate_limiter=RateLimiter.shared(settings.qps, key="openplatform"),
    )
    if not settings.picwish_appcode:
        return vision, None
    limiter = RateLimiter.shared(settings.qps, key="picwish")
    return vision, PicWishClient(
        settings.picwish_appcode, endpoint=settings.picwish_endpoint, rate_limiter=limiter
    )


def _cached_storage(
    settings: Settings, context: object | None, factory: StorageFactory | None
) -> StorageFactory:
    """One storage object per (bucket, region), made by `factory` or, by default, on OSS."""
    from segflow.storage import storage_for

    storages: dict[tuple[str, str | None], Storage] = {}
    lock = threading.Lock()

    def storage(bucket: str, region: str | None = None) -> Storage:
        with lock:
            if (bucket, region) not in storages:
                storages[bucket, region] = (
                    factory(bucket, region)
                    if factory is not None
                    else storage_for(settings, bucket, context, region=region)
                )
            return storages[bucket, region]

    return storage


class LatestContext:
    """Stands in for FC's context in long-lived clients: attributes come from the current invocation's
    context, so the STS keys FC rotates in a warm instance are always the fresh ones."""

    def __init__(self) -> None:
        self.current: object | None = None

    def __getattr__(self, name: str) -> object:
        current = self.__dict__.get("current")
        if current is None:
            raise AttributeError(name)
        return getattr(current, name)


_handler_lock = threading.Lock()
_handler_deps: Deps | None = None
_handler_context = LatestContext()


def handler_deps(context: object | None, environ: Mapping[str, str]) -> Deps:
    """The `Deps` of this warm instance, built on the first invocation (not at import) and reused."""
    global _handler_deps
    with _handler_lock:
        _handler_context.current = context
        if _handler_deps is None:
            from segflow.logs import install_redaction

            settings = Settings.from_env(environ)
            install_redaction(settings.secret_values)
            logging.getLogger("segflow").setLevel(settings.log_level)
            _handler_deps = Deps.from_settings(settings, _handler_context)
        return _handler_deps


def use_handler_deps(deps: Deps | None) -> None:
    """Inject the `Deps` the handlers use (tests, `segflow invoke`); None forgets them."""
    global _handler_deps
    with _handler_lock:
        _handler_deps = deps
