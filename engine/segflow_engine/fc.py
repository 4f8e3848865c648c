"""The engine as a Function Compute web function: what the package's `bootstrap` runs.

    python -m segflow_engine.fc --port 9000

`segflow engine` with the settings FC's custom runtime requires (docs/engine-on-fc.md): it listens on
`0.0.0.0` ("must bind 0.0.0.0:CAPort", a server on 127.0.0.1 is never reached), keeps idle connections 16
minutes (FC wants a keep-alive idle timeout of at least 15, or calls fail with "Process exited
unexpectedly"), runs one model call at a time, loads the served actions' models before it listens (FC
gives a server 120 s to be ready), and logs what the package serves. Any `segflow engine` option given
after these wins.
"""

from __future__ import annotations

import argparse
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


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        actions = served.in_order(served.served_actions())
    except ConfigError as exc:
        print(f"segflow engine: {exc.message}", file=sys.stderr)
        return 2
    print(f"segflow engine on Function Compute: serves {', '.join(actions)}", flush=True)
    return command.run(args)


if __name__ == "__main__":
    sys.exit(main())
