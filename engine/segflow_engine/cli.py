"""`segflow engine`: serve the local engine (imageseg, videoseg and PicWish HTTP APIs) on one port.

Only argument parsing happens at import; the server and the models load inside `run`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from segflow_engine.hosts import is_loopback

if TYPE_CHECKING:
    from segflow_engine.auth import EngineCredentials

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8780
DEFAULT_WORKERS = 2


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind (default {DEFAULT_HOST}: this machine only; 0.0.0.0 exposes the engine)",
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"model worker threads shared by all calls and jobs (default {DEFAULT_WORKERS})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where inputs in progress and results are kept (default: a temporary folder removed on exit)",
    )
    parser.add_argument(
        "--qps",
        type=float,
        default=None,
        help="refuse calls over this rate per AccessKeyId and action (Throttling.User; PicWish 429), "
        "like the service's default 2 QPS (default: no limit)",
    )
    parser.add_argument(
        "--public-url",
        default=None,
        help="base URL clients use to reach the engine, for result links (default http://HOST:PORT)",
    )
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="listen at once and load models on the first request (default: load them before listening)",
    )


def run(args: argparse.Namespace) -> int:
    from segflow.errors import ConfigError
    from segflow_engine.auth import ACCESS_KEYS_ENV, APPCODES_ENV, EngineCredentials
    from segflow_engine.models import check_installed
    from segflow_engine.server import EngineConfig, EngineServer

    if args.workers < 1:
        print("segflow engine: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.qps is not None and args.qps <= 0:
        print("segflow engine: --qps must be positive", file=sys.stderr)
        return 2
    try:
        check_installed()
        credentials = EngineCredentials.from_env(os.environ)
    except ConfigError as exc:
        print(f"segflow engine: {exc.message}", file=sys.stderr)
        return 2
    if not args.no_warm_up:
        # Load every model before listening: the first request must not pay for it (clients time out).
        from segflow_engine.actions import warm_up

        started = time.monotonic()
        warm_up()
        print(f"segflow engine: models loaded in {time.monotonic() - started:.1f} s", flush=True)
    config = EngineConfig(
        host=args.host,
        port=args.port,
        workers=args.workers,
        state_dir=args.state_dir,
        public_url=args.public_url,
        qps=args.qps,
    )
    try:
        server = EngineServer(config, credentials)
    except OSError as exc:
        print(
            f"segflow engine: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        _print_banner(server.base_url, args.host, credentials, ACCESS_KEYS_ENV, APPCODES_ENV, args.workers)
        while not stop.wait(0.5):
            pass
        print("segflow engine: stopping (running model work finishes first)", file=sys.stderr)
    finally:
        server.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _print_banner(
    base_url: str, host: str, credentials: EngineCredentials, keys_env: str, appcodes_env: str, workers: int
) -> None:
    print(f"segflow engine listening on {base_url} (model workers: {workers})")
    endpoint = base_url.split("//", 1)[-1]
    print(f"  imageseg 2019-12-30 and videoseg 2020-03-20 RPC: {base_url}/  (SDK endpoint {endpoint})")
    print(f"  PicWish: POST {base_url}/tasks/visual/segmentation")
    if credentials.generated_keys:
        key_id, secret = credentials.first_key
        print(f"  development key pair (set {keys_env}=id:secret to choose your own):")
        print(f"    AccessKeyId     {key_id}")
        print(f"    AccessKeySecret {secret}")
    else:
        print(f"  AccessKeyIds from {keys_env}: {', '.join(sorted(credentials.access_keys))}")
    if credentials.generated_appcodes:
        print(f"  development PicWish AppCode (set {appcodes_env} to choose): {credentials.first_appcode}")
    else:
        print(f"  PicWish AppCodes from {appcodes_env}: {len(credentials.appcodes)}")
    if not is_loopback(host):
        print(f"  warning: bound to {host}, reachable from other machines", file=sys.stderr)
    sys.stdout.flush()
