"""`segflow status BUCKET`: is it working? Where the uploads of one bucket stand, read from listings.

The bucket is a folder of `--bucket-dir` (as `segflow run` and `segflow invoke` use), else the OSS bucket
of that name (the AccessKey from `ALIBABA_CLOUD_*`, the endpoint from `SEGFLOW_REGION` or
`SEGFLOW_OSS_ENDPOINT`, the prefixes from `SEGFLOW_*_PREFIX`, as the functions read them). What it reads
and what that costs: `segflow_cli.bucket_status`; how it is shown: `segflow_cli.status_view`.

Exit codes: 0 the status was read; with `--fail-on-failures`, 1 when something needs a person: a final
failure, a deployment fault, an upload stuck in `submitting`, or a collector silent for `--stale-after`
(or never seen; for a local-directory bucket, which no timer serves, only while jobs wait for it); 2 a
usage or access error (no such bucket, access denied, no credentials), one line on
stderr. Only argument parsing happens at import.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from segflow_cli.logsetup import add_verbose
from segflow_cli.options import ENV_BUCKET

if TYPE_CHECKING:
    from segflow.errors import SegflowError
    from segflow.layout import BucketLayout
    from segflow.storage.base import Storage

PROG = "segflow status"
CONSOLE_LOG_LEVEL = "WARNING"
DEFAULT_FAILURES = 10
MAX_FAILURES = 1000
DEFAULT_STALE_AFTER = 180.0
"""The timer fires every minute (s.yaml): three missed ticks in a row mean the collector is not running."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "bucket",
        nargs="?",
        help=f"the bucket segflow processes: its OSS name, or a folder of --bucket-dir (default: "
        f"{ENV_BUCKET}, as backfill and redrive)",
    )
    parser.add_argument(
        "--bucket-dir",
        help="a directory with one folder per bucket, as `segflow run` and `segflow invoke` use "
        "(default: SEGFLOW_LOCAL_BUCKET_DIR; without either: OSS, with the ALIBABA_CLOUD_* AccessKey)",
    )
    parser.add_argument("--json", action="store_true", help="print the status as JSON (a stable shape)")
    parser.add_argument(
        "--failures", type=_count_arg, default=DEFAULT_FAILURES, metavar="N",
        help=f"show the N most recent failures (default {DEFAULT_FAILURES}, at most {MAX_FAILURES})",
    )  # fmt: skip
    parser.add_argument(
        "--fail-on-failures",
        action="store_true",
        help="exit 1 when something needs a person: a final failure, a deployment fault, an upload stuck "
        "in submitting, or a silent collector",
    )
    parser.add_argument(
        "--stale-after", type=_seconds_arg, default=DEFAULT_STALE_AFTER, metavar="SECONDS",
        help=f"the collector is silent when it has not run for this long (default {DEFAULT_STALE_AFTER:.0f})",
    )  # fmt: skip
    add_verbose(parser)
    parser.add_argument(
        "--stuck-after", type=_seconds_arg, metavar="SECONDS",
        help="an upload is stuck when it has been submitting this long (default: the collector's stall "
        "time, after which it re-drives the upload)",
    )  # fmt: skip


def _count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from exc
    if not 0 <= value <= MAX_FAILURES:
        raise argparse.ArgumentTypeError(f"must be 0…{MAX_FAILURES}")
    return value


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from exc
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import time

    from segflow.errors import SegflowError
    from segflow.services.deps import DEFAULT_STALL_SECONDS
    from segflow_cli.bucket_status import gather_status
    from segflow_cli.output import refuse

    root = args.bucket_dir or os.environ.get("SEGFLOW_LOCAL_BUCKET_DIR", "").strip() or None
    bucket = (args.bucket or os.environ.get(ENV_BUCKET, "")).strip()
    if not bucket:
        return refuse(PROG, f"which bucket? name it, or set {ENV_BUCKET}", as_json=args.json)
    try:
        storage, layout = open_bucket(bucket, root, os.environ)
        status = gather_status(
            storage, layout, now=time.time(), failures=args.failures, stale_after=args.stale_after,
            stuck_after=args.stuck_after or DEFAULT_STALL_SECONDS, collector_deployed=root is None,
        )  # fmt: skip
    except SegflowError as exc:
        return refuse(PROG, access_message(exc, bucket, root), as_json=args.json, code=exc.code)
    if args.json:
        print(json.dumps(status.to_json(), ensure_ascii=False, indent=2))
    else:
        from segflow_cli.status_view import print_status

        print_status(status, f"{root}/{bucket}" if root else f"oss://{bucket}")
    return 1 if args.fail_on_failures and status.problems else 0


def open_bucket(bucket: str, root: str | None, environ: Mapping[str, str]) -> tuple[Storage, BucketLayout]:
    """The storage and key layout of `bucket`: a folder of the bucket directory `root`, else OSS (the
    prefixes and the AccessKey from the environment, as the functions read them)."""
    from pathlib import Path

    from segflow.layout import BucketLayout
    from segflow.settings import Settings

    settings = Settings.from_env(environ)
    layout = BucketLayout(
        settings.output_prefix, settings.jobs_prefix, settings.failed_prefix, settings.input_prefix
    )
    if root:
        from segflow_cli.localbucket import LocalBuckets

        return LocalBuckets(Path(root)).existing(bucket), layout
    from segflow.storage import storage_for

    return storage_for(settings, bucket), layout


def access_message(error: SegflowError, bucket: str, root: str | None) -> str:
    """One line for a status that could not be read: what went wrong, and what to check."""
    where = f"under {root}" if root else "on OSS"
    if error.code == "NoSuchBucket":
        hint = "" if root else ": check the name, and SEGFLOW_REGION or SEGFLOW_OSS_ENDPOINT"
        return f"bucket {bucket!r} does not exist {where} ({error.code}{hint})"
    if error.http_status == 403:
        return (
            f"access to bucket {bucket!r} {where} was refused ({error.code}: {error.message}); listing and "
            "reading under SEGFLOW_JOBS_PREFIX and SEGFLOW_FAILED_PREFIX must be allowed"
        )
    return str(error)
