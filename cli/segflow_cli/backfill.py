"""`segflow backfill`: the objects already in the bucket's input prefix, through on_upload as if just
uploaded, resumable from a checkpoint (what it guarantees, exit statuses: docs/operations.md).

Only argument parsing happens at import; the work is in `segflow_cli.backfill_run`.
"""

from __future__ import annotations

import argparse

from segflow_cli.options import add_common_arguments, positive_int

CONSOLE_LOG_LEVEL = "WARNING"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Send the objects already in the bucket's input prefix through on_upload, as if just uploaded: "
        "one result or one failure record each, nothing paid twice. Resumable."
    )
    which = parser.add_argument_group("which objects (the input prefix, SEGFLOW_INPUT_PREFIX, by default)")
    which.add_argument("--prefix", help="a key prefix under the input prefix (else taken relative to it)")
    which.add_argument(
        "--suffix", action="append", default=[], help="key ending, case-insensitive (repeatable: any of them)"
    )
    which.add_argument(
        "--since", help="LastModified at or after: 2024-05-01, 2024-05-01T08:00:00Z, or 7d, 12h"
    )
    which.add_argument("--until", help="LastModified before (same forms as --since)")
    which.add_argument(
        "--limit", type=positive_int, help="at most this many objects in this run (the next run goes on)"
    )
    resume_group = parser.add_argument_group("resuming")
    resume_group.add_argument(
        "--checkpoint",
        type=str,
        help="keep the checkpoint in this local file (default: the bucket, <jobs>backfill/checkpoint.json)",
    )
    resume_group.add_argument(
        "--restart", action="store_true", help="ignore the checkpoint and list from the start"
    )
    add_common_arguments(parser, event_name="Backfill")


def run(args: argparse.Namespace) -> int:
    import os

    from segflow_cli.backfill_run import PROG, run_backfill
    from segflow_cli.output import run_guarded

    return run_guarded(
        PROG,
        args.json,
        lambda: run_backfill(args, dict(os.environ)),
        interrupted="interrupted; the same command continues from the checkpoint",
        refused="; nothing was sent",
    )
