"""The options `segflow backfill` and `segflow redrive` share (argument parsing only: cheap to import)."""

from __future__ import annotations

import argparse
from pathlib import Path

from segflow_cli.logsetup import add_verbose

ENV_BUCKET = "SEGFLOW_BUCKET"
DEFAULT_FUNCTION = "segflow-on-upload"
DEFAULT_WORKERS = 4
DEFAULT_RECORDS_PER_EVENT = 10
"""Records per event. on_upload handles an event's records one after the other and starts one only while
45 s of the invocation remain (s.yaml: timeout 300 s), so ten keep one invocation to seconds and leave
FC free to spread events over instances; ten records of the longest keys stay far below 64 KB."""


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
    add_verbose(how, " (with --local, the handler's log lines from INFO up too)")
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
