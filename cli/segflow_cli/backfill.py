"""`segflow backfill`: the objects that were in the bucket before the trigger, as if just uploaded.

It lists the input prefix (filters in `objects`), and hands every object to on_upload — through the
deployed function (`--via fc`) or the handler in this process (`--local`, see `senders`) — so each ends
with one result or one failure record, through the same code and records as an upload. An object already
done is a duplicate for the handler (no vision call), so a second backfill is safe; a finished one is not
even listed again (the checkpoint says so).

Progress is checkpointed (`checkpoint`) after every batch handled in listing order, at most every
`SAVE_EVERY` seconds and at the end: an interrupted backfill continues after the last key it handled.

Exit status: 0 every object was sent (fc) or ended done / skipped (local); 1 some failed or did not
finish (local) or FC refused a send (the run stopped there); 2 a usage or configuration error (unknown
bucket, no permission to list, nothing matched, a checkpoint of another bucket or other filters) — then
nothing was sent; 130 interrupted (run the same command to continue).

Only argument parsing happens at import; the work is in `segflow_cli.backfill_run`.
"""

from __future__ import annotations

import argparse

from segflow_cli.options import add_common_arguments, positive_int

PROG = "segflow backfill"
INTERRUPTED = 130


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
    import sys

    from segflow.errors import SegflowError
    from segflow_cli.backfill_run import run_backfill

    try:
        return run_backfill(args, dict(os.environ))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the same command continues from the checkpoint", file=sys.stderr)
        return INTERRUPTED
    except SegflowError as error:
        print(f"{PROG}: {error.message} ({error.code}); nothing was sent", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
