"""`segflow redrive`: after fixing what made uploads fail, send exactly those objects through again.

The failure index (`<jobs>/state/failed/<kind>/<code>/<action>/<hash>`, `failure_records`) is listed —
by kind, code, action and time without reading a record — and each failure that matches is taken in turn:

1. its failure record is read (the index entry names the source key); gone meanwhile: skipped;
2. the object's HEAD gives the size and ETag the event needs; a deleted object is skipped (`gone`);
3. its idempotency record (the failure's `RecordId`, or the id of its key, ETag and action) is read: a
   record that is `done` means a result exists — the stale failure record is cleared, nothing is sent;
4. the redrive marker `<jobs>/redrives/<hash>.<failure>` is created put-if-absent: one redrive of one
   failure, whoever asks (another redrive holding it: skipped as `held`);
5. a `failed` record is reopened (`RecordStore.reopen`: `submitting`, unclaimed, its paid-call count
   reset), without which the event would be a duplicate and do nothing;
6. the object goes through `--via fc` or `--local` like a backfill. A send FC refuses gives back the
   markers and records of that batch, so the next redrive takes them again.

The marker names the failure by its time and content: a file that fails again (new time, code or request
id) can be redriven again later; the same failure is never sent twice, by one redrive or two at once.

Exit status: 0 everything matching was sent (fc) or ended done (local); 1 some failed again or did not
finish, or FC refused a send; 2 a usage or configuration error, or no failure matches (nothing sent).

Only argument parsing happens at import; the work is in `segflow_cli.redrive_run`.
"""

from __future__ import annotations

import argparse

from segflow_cli.options import add_common_arguments, positive_int

PROG = "segflow redrive"
INTERRUPTED = 130


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
    import sys

    from segflow.errors import SegflowError
    from segflow_cli.redrive_run import run_redrive

    try:
        return run_redrive(args, dict(os.environ))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; run it again to redrive the rest", file=sys.stderr)
        return INTERRUPTED
    except SegflowError as error:
        print(f"{PROG}: {error.message} ({error.code}); nothing was sent", file=sys.stderr)
        return 2
