"""`segflow redrive`: after fixing what made uploads fail, send exactly those objects through on_upload
again, each failure at most once (how: `segflow_cli.redrive_run`; exit statuses: docs/operations.md).

Only argument parsing happens at import; the work is in `segflow_cli.redrive_run`.
"""

from __future__ import annotations

import argparse

from segflow_cli.options import add_common_arguments, positive_int

CONSOLE_LOG_LEVEL = "WARNING"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Send the objects that have a failure record through on_upload again, once the cause is fixed "
        "(a permission, a rule, an AppCode): each ends with a result, or one fresh failure record."
    )
    which = parser.add_argument_group("which failures (all of them by default)")
    which.add_argument("--code", action="append", default=[], help="the failure's code (repeatable)")
    which.add_argument("--action", action="append", default=[], help="the action it failed in (repeatable)")
    which.add_argument(
        "--kind",
        choices=("failed", "fault", "all"),
        default="all",
        help="fault: deployment faults (keys, permissions, AppCode); failed: the object's own failures",
    )
    which.add_argument("--prefix", help="source keys under this prefix (one read per failure to check it)")
    which.add_argument("--since", help="failures written at or after: 2024-05-01T08:00:00Z, or 12h, 7d")
    which.add_argument("--until", help="failures written before (same forms)")
    which.add_argument("--limit", type=positive_int, help="at most this many failures in this run")
    add_common_arguments(parser, event_name="Redrive")


def run(args: argparse.Namespace) -> int:
    import os

    from segflow_cli.output import run_guarded
    from segflow_cli.redrive_run import PROG, run_redrive

    return run_guarded(
        PROG,
        args.json,
        lambda: run_redrive(args, dict(os.environ)),
        interrupted="interrupted; run it again to redrive the rest",
        refused="; nothing was sent",
    )
