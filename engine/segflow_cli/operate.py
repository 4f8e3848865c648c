"""What `segflow backfill` and `segflow redrive` share: their options, the bucket, and the sender.

`open_operation(args, environ)` resolves, in this order, everything that can be wrong before anything is
sent — the bucket name, the way to send, the settings, the bucket itself (a local directory must exist;
OSS answers the first listing), the credentials and the FC endpoint — so a configuration error exits 2
with nothing sent.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from segflow.errors import ConfigError
from segflow.layout import BucketLayout
from segflow.settings import Settings
from segflow.storage.base import Storage
from segflow_cli.localrun import LocalRuntime
from segflow_cli.senders import DEFAULT_RECORDS_PER_EVENT, EventShape, FcSender, LocalSender, Sender

ENV_BUCKET = "SEGFLOW_BUCKET"
DEFAULT_FUNCTION = "segflow-on-upload"
DEFAULT_WORKERS = 4


def add_common_arguments(parser: argparse.ArgumentParser, *, event_name: str) -> None:
    parser.set_defaults(event_name=event_name)
    parser.add_argument(
        "bucket", nargs="?", help=f"the bucket segflow processes (default: {ENV_BUCKET}, as s.yaml reads it)"
    )
    parser.add_argument(
        "--bucket-dir",
        type=Path,
        help="a directory with one folder per bucket, as `segflow run` uses (default: "
        "SEGFLOW_LOCAL_BUCKET_DIR; without either: OSS, with the ALIBABA_CLOUD_* AccessKey)",
    )
    how = parser.add_argument_group("how objects are sent (one of --via fc, --local, --dry-run)")
    how.add_argument(
        "--via",
        choices=("fc", "local"),
        help="fc: asynchronous invocations of the deployed on_upload function; local: the handler in "
        "this process",
    )
    how.add_argument("--local", action="store_const", const="local", dest="via", help="same as --via local")
    how.add_argument("--dry-run", action="store_true", help="say what would be sent; write and call nothing")
    how.add_argument(
        "--batch",
        type=positive_int,
        default=DEFAULT_RECORDS_PER_EVENT,
        help=f"records per OSS event (default {DEFAULT_RECORDS_PER_EVENT}; an event stays under 64 KB)",
    )
    how.add_argument(
        "--qps",
        type=float,
        help="--via fc: records sent per second; --local: vision API calls per second "
        "(default: SEGFLOW_QPS, else 2)",
    )
    how.add_argument(
        "--workers", type=positive_int, default=DEFAULT_WORKERS, help="batches in flight at once (default 4)"
    )
    how.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    how.add_argument("--verbose", action="store_true", help="--local: show the handler's log lines")
    _add_fc_arguments(parser)
    _add_local_arguments(parser)


def _add_fc_arguments(parser: argparse.ArgumentParser) -> None:
    fc = parser.add_argument_group("--via fc (FC 3.0, the keys of the environment)")
    fc.add_argument(
        "--function", default=DEFAULT_FUNCTION, help=f"on_upload's name (default {DEFAULT_FUNCTION})"
    )
    fc.add_argument("--qualifier", help="version or alias (default: LATEST)")
    fc.add_argument("--region", help="FC region, also the events' region (default: SEGFLOW_REGION)")
    fc.add_argument("--account-id", help="default: ALIBABA_CLOUD_ACCOUNT_ID, else STS GetCallerIdentity")
    fc.add_argument(
        "--endpoint",
        help="FC endpoint or template with {account_id} and {region} (default: SEGFLOW_FC_ENDPOINT)",
    )


def _add_local_arguments(parser: argparse.ArgumentParser) -> None:
    local = parser.add_argument_group("--local (the handlers in this process)")
    local.add_argument(
        "--engine",
        choices=("configured", "local"),
        default="configured",
        help="configured: the vision endpoints of the environment (Alibaba Cloud by default); local: "
        "start `segflow engine` on a free loopback port, as `segflow run` does",
    )
    local.add_argument(
        "--no-wait", action="store_true", help="do not run the collector until the video jobs finish"
    )
    local.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        help="give up waiting for video jobs after this (default 1200 s)",
    )
    local.add_argument(
        "--keep-going",
        action="store_true",
        help="on a deployment fault, record it and go on (default: stop; run again once fixed)",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


@dataclass
class Operation:
    """The bucket and the way to reach on_upload, for one run."""

    settings: Settings
    bucket: str
    storage: Storage
    layout: BucketLayout
    via: str | None
    sender: Sender | None = None
    runtime: LocalRuntime | None = None
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def open_operation(args: argparse.Namespace, environ: Mapping[str, str]) -> Iterator[Operation]:
    """Everything a run needs, checked before anything is sent; closed (engine stopped) afterwards."""
    bucket = (args.bucket or environ.get(ENV_BUCKET, "")).strip()
    if not bucket:
        raise ConfigError(f"which bucket? name it, or set {ENV_BUCKET}")
    via = None if args.dry_run else args.via
    if not args.dry_run and via is None:
        raise ConfigError("choose how to send: --via fc (the deployed function), --local, or --dry-run")
    if via == "local" and args.engine == "local" and args.no_wait:
        raise ConfigError("--engine local stops with this command: video jobs cannot be left to finish")
    with contextlib.ExitStack() as stack:
        env = dict(environ)
        if args.qps is not None:
            env["SEGFLOW_QPS"] = str(args.qps)
        if via == "local" and args.engine == "local":
            env.update(_start_engine(stack))
        settings = Settings.from_env(env)
        root = args.bucket_dir or env.get("SEGFLOW_LOCAL_BUCKET_DIR", "").strip() or None
        factory = _local_buckets(Path(root) if root else None, bucket)
        operation = _open(args, env, settings, bucket, via, factory)
        if operation.runtime is not None:
            stack.callback(operation.runtime.close)
        if operation.sender is not None:
            stack.callback(operation.sender.close)
        yield operation


def _open(
    args: argparse.Namespace,
    env: Mapping[str, str],
    settings: Settings,
    bucket: str,
    via: str | None,
    factory: object | None,
) -> Operation:
    from segflow.storage import storage_for
    from segflow_cli.localbucket import LocalBuckets

    layout = BucketLayout(
        settings.output_prefix, settings.jobs_prefix, settings.failed_prefix, settings.input_prefix
    )
    buckets = factory if isinstance(factory, LocalBuckets) else None
    if via == "local":
        runtime = LocalRuntime(settings, bucket, buckets, verbose=args.verbose)
        shape = EventShape(bucket, args.region or settings.region, *_names(args))
        sender: Sender = LocalSender(runtime, shape, keep_going=args.keep_going)
        return Operation(settings, bucket, runtime.storage, layout, via, sender, runtime)
    storage = buckets(bucket) if buckets is not None else storage_for(settings, bucket)
    operation = Operation(settings, bucket, storage, layout, via)
    if via == "fc":
        operation.sender = _fc_sender(args, env, settings, bucket)
    return operation


def _names(args: argparse.Namespace) -> tuple[str, str]:
    name = str(args.event_name)
    return f"ObjectCreated:{name}", f"segflow-{name.lower()}"


def _local_buckets(bucket_dir: Path | None, bucket: str) -> object | None:
    if bucket_dir is None:
        return None
    from segflow.errors import StorageError
    from segflow_cli.localbucket import LocalBuckets
    from segflow_cli.objects import bucket_error

    buckets = LocalBuckets(bucket_dir)
    try:
        buckets.existing(bucket)  # a missing folder would list as an empty bucket
    except StorageError as error:
        raise bucket_error(error, f"{bucket} (under {buckets.root})", "") from error
    return buckets


def _fc_sender(args: argparse.Namespace, env: Mapping[str, str], settings: Settings, bucket: str) -> FcSender:
    from segflow.credentials import credentials_from_context
    from segflow.logs import install_redaction
    from segflow_cli.fcapi import FC_ENDPOINT_TEMPLATE, CloudApiError, FcClient, fc_endpoint
    from segflow_cli.remote import ENV_FC_ENDPOINT, resolve_account_id

    credentials = credentials_from_context(None, settings.credential_env)
    install_redaction([v for v in (credentials.access_key_secret, credentials.security_token) if v])
    region = args.region or settings.region
    template = args.endpoint or env.get(ENV_FC_ENDPOINT, "").strip() or FC_ENDPOINT_TEMPLATE
    account = (args.account_id or env.get("ALIBABA_CLOUD_ACCOUNT_ID", "")).strip() or None
    if account is None and "{account_id}" in template:
        try:
            account = resolve_account_id(args, env, credentials)
        except CloudApiError as exc:
            raise ConfigError(
                f"cannot find the account id with STS GetCallerIdentity ({exc}); pass --account-id"
            ) from exc
    endpoint = fc_endpoint(template, region=region, account_id=account)
    shape = EventShape(bucket, region, *_names(args), account=account or "000000000000")
    return FcSender(
        lambda: FcClient(credentials, endpoint),
        args.function,
        shape,
        qps=settings.qps,
        qualifier=args.qualifier,
    )


def _start_engine(stack: contextlib.ExitStack) -> dict[str, str]:
    """`segflow engine` in a child process for the length of the run; the variables pointing at it."""
    import sys

    from segflow_cli.localengine import engine_environment, engine_keys, free_port, local_engine

    access_key, appcode = engine_keys()
    state = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segflow-engine-")))
    port = free_port()
    print(f"starting the local engine on 127.0.0.1:{port} (models load once)", file=sys.stderr)
    base_url = stack.enter_context(local_engine(port, state, access_key, appcode))
    env = engine_environment(base_url, access_key, appcode)
    env["ALIBABA_CLOUD_SECURITY_TOKEN"] = ""  # the engine's keys are long-term: no STS token with them
    return env
