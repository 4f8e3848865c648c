"""The engine as a Function Compute web function: what the package's `bootstrap` runs.

    python -m segflow_engine.fc --port 9000

`segflow engine`'s options, with the defaults FC's custom runtime needs (docs/engine-on-fc.md): it listens
on `0.0.0.0` ("must bind 0.0.0.0:CAPort", a server on 127.0.0.1 is never reached) at once, well within
FC's 120 s, keeps idle connections 16 minutes (FC wants a keep-alive of at least 15, or calls fail with
"Process exited unexpectedly"), runs one model call at a time, loads its models in the Initializer
(`POST /initialize`), logs in FC's format on stdout, and keeps its state where `fcdeploy.FcDeployment`
says: OSS inside FC. Any option given after these wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from segflow.errors import ConfigError
from segflow_engine import command, served

KEEP_ALIVE_SECONDS = 16 * 60
# One model worker: on an instance's 2 vCPU a second model call at once gains nothing (bench/engine_fc.py:
# the ISNet session already uses both cores), so a second request waits for the first instead of slowing it.
MODEL_WORKERS = 1
FC_DEFAULTS = (
    *("--host", "0.0.0.0", "--workers", str(MODEL_WORKERS)),
    *("--idle-timeout", str(KEEP_ALIVE_SECONDS), "--log-level", "info"),
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m segflow_engine.fc",
        description="Serve the segflow engine as a Function Compute custom-runtime web function.",
    )
    command.configure_parser(parser)
    return parser.parse_args([*FC_DEFAULTS, *argv])


def log_to_stdout(level: str) -> None:
    """segflow's lines on stdout, which FC sends to the function's Logstore, in FC's format."""
    from segflow_engine.fcruntime import FcLogFormat

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(FcLogFormat())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        from segflow_engine.auth import EngineCredentials
        from segflow_engine.fcdeploy import FcDeployment, build_server
        from segflow_engine.models import check_installed

        actions = served.in_order(served.served_actions())
        deployment = FcDeployment.from_env(os.environ)
        check_installed()
        credentials = EngineCredentials.from_env(os.environ)
        server = build_server(args, deployment, credentials)
    except ConfigError as exc:
        print(f"segflow engine: {exc.message}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"segflow engine: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    log_to_stdout(args.log_level)
    where = f"OSS {deployment.bucket}/{deployment.prefix}" if deployment.bucket else "this instance"
    print(f"segflow engine on Function Compute: serves {', '.join(actions)}", flush=True)
    print(f"segflow engine listening on {server.base_url}; state in {where}", flush=True)
    command.serve_until_stopped(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
