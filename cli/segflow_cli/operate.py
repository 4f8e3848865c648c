"""What `segflow backfill` and `segflow redrive` share: the bucket and the sender (options: `options`).

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
from segflow_cli.localbucket import LocalBuckets
from segflow_cli.localrun import LocalRuntime
from segflow_cli.options import ENV_BUCKET
from segflow_cli.senders import EventShape, FcSender, LocalSender, Sender


@dataclass
class Operation:
    """The bucket and the way to reach on_upload, for one run."""

    settings: Settings
    bucket: str
    storage: Storage
    layout: BucketLayout
    via: str | None
    sender: Sender | None = None
    """None for a dry run, which sends nothing."""
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
        buckets = _local_buckets(Path(root) if root else None, bucket)
        if via == "local" and buckets is not None and settings.endpoints_are_alibaba:
            warn_real_service(settings, buckets)
        operation = _open(args, env, settings, bucket, via, buckets)
        if operation.sender is not None:
            stack.callback(operation.sender.close)
        yield operation


def _open(
    args: argparse.Namespace,
    env: Mapping[str, str],
    settings: Settings,
    bucket: str,
    via: str | None,
    buckets: LocalBuckets | None,
) -> Operation:
    from segflow.storage import storage_for

    layout = BucketLayout(
        settings.output_prefix, settings.jobs_prefix, settings.failed_prefix, settings.input_prefix
    )
    if via == "local":
        runtime = LocalRuntime(settings, bucket, buckets, verbose=args.verbose)
        shape = EventShape(bucket, args.region or settings.region, *_names(args))
        sender: Sender = LocalSender(runtime, shape, keep_going=args.keep_going)
        return Operation(settings, bucket, runtime.storage, layout, via, sender)
    storage = buckets(bucket) if buckets is not None else storage_for(settings, bucket)
    operation = Operation(settings, bucket, storage, layout, via)
    if via == "fc":
        operation.sender = _fc_sender(args, env, settings, bucket)
    return operation


def warn_real_service(settings: Settings, buckets: LocalBuckets) -> None:
    """A local bucket folder and no engine configured: say, before anything runs, that the handler will
    call Alibaba Cloud's real service (paid), and refuse when every object would fail there."""
    import sys

    from segflow.credentials import credentials_from_context

    what = (
        f"--local over the folder {buckets.root} with no SEGFLOW_IMAGESEG_ENDPOINT / _VIDEOSEG_ENDPOINT "
        f"set calls Alibaba Cloud's real service ({settings.imageseg_endpoint})"
    )
    fix = "pass --engine local to run the local engine instead, or set the endpoints to an engine you run"
    try:
        credentials = credentials_from_context(None, settings.credential_env)
    except ConfigError as error:
        raise ConfigError(
            f"{what}, and with no AccessKey every object would fail there ({error.code}); {fix}"
        ) from error
    if settings.input_url == "presign":
        raise ConfigError(
            f"{what}, which cannot fetch the presigned URLs of a local folder (SEGFLOW_INPUT_URL=presign: "
            f"each object would fail InvalidImage.Download); {fix}"
        )
    print(
        f"note: {what} with the AccessKey {credentials.access_key_id} — paid calls; {fix}",
        file=sys.stderr,
    )


def _names(args: argparse.Namespace) -> tuple[str, str]:
    name = str(args.event_name)
    return f"ObjectCreated:{name}", f"segflow-{name.lower()}"


def _local_buckets(bucket_dir: Path | None, bucket: str) -> LocalBuckets | None:
    if bucket_dir is None:
        return None
    from segflow.errors import StorageError
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
