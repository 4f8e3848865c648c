"""The `segflow` command.

Each subcommand lives in its own module that exposes `configure_parser(parser)` and `run(args) -> int`
(and, for segflow_cli's own, `CONSOLE_LOG_LEVEL`: the console log is set up here, `segflow_cli.logsetup`);
this file only maps names to modules, so `segflow --help` stays fast and the engine's models are loaded
only for `segflow engine` and `segflow models`. Nothing in this package ships to Function Compute.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType
from typing import NoReturn

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "run": ("segflow_cli.run", "run the whole pipeline over local files (local engine by default)"),
    "invoke": (
        "segflow_cli.invoke",
        "invoke a function's handler locally, or the deployed one with --remote",
    ),
    "status": (
        "segflow_cli.status",
        "where a bucket stands: done, failed, pending, stuck, and whether the collector runs",
    ),
    "backfill": (
        "segflow_cli.backfill",
        "send the objects already in the bucket through on_upload, as if just uploaded (resumable)",
    ),
    "redrive": (
        "segflow_cli.redrive",
        "send the objects with a failure record through on_upload again, once the cause is fixed",
    ),
    "engine": ("segflow_engine.command", "serve the local engine (imageseg, videoseg and PicWish HTTP APIs)"),
    "models": ("segflow_engine.models_cli", "install or check the local engine's model weights"),
}


def _load(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name.split(".")[0]):
            return None
        raise


class _Parser(argparse.ArgumentParser):
    """argparse's parser; with `--json` on the command line a usage error is also a JSON document."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            from segflow_cli.output import USAGE, error_document, print_json

            print_json(error_document(self.prog.split()[-1], message, code="UsageError", exit_status=USAGE))
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="segflow",
        description="Image and video segmentation on Alibaba Cloud OSS uploads, runnable on one machine.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module = _load(module_name)
        if module is None:
            sub_parser.set_defaults(_missing=module_name)
            continue
        module.configure_parser(sub_parser)
        sub_parser.set_defaults(_run=module.run, _log_level=getattr(module, "CONSOLE_LOG_LEVEL", None))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    _Parser.json_errors = "--json" in arguments
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help()
        return 2
    missing = getattr(args, "_missing", None)
    if missing is not None:
        print(
            f"segflow {args.command}: not available in this installation ({missing} is missing); "
            "run `make setup` in the segflow checkout to install the engine and its models.",
            file=sys.stderr,
        )
        return 2
    if args._log_level is not None:  # the engine and models commands keep their own logging
        import os

        from segflow.errors import ConfigError
        from segflow_cli.logsetup import configure

        try:
            configure(verbose=args.verbose, environ=os.environ, default=args._log_level)
        except ConfigError as error:
            print(f"segflow {args.command}: {error.message}", file=sys.stderr)
            return 2
    result: int = args._run(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
