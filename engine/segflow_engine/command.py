"""`segflow engine`: serve the local engine (imageseg, videoseg and PicWish HTTP APIs) on one port.

Only argument parsing happens at import; the server and the models load inside `run`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from segflow_engine.hosts import is_loopback
from segflow_engine.limits import ServerLimits

if TYPE_CHECKING:
    from segflow_engine.auth import EngineCredentials

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8780
DEFAULT_WORKERS = 2
LOG_LEVELS = ("debug", "info", "warning", "error")


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
    _add_http_options(parser)


def _add_http_options(parser: argparse.ArgumentParser) -> None:
    limits = ServerLimits()
    group = parser.add_argument_group(
        "HTTP limits (slow or idle clients hold no thread; only an upload being received does)"
    )
    group.add_argument(
        "--http-threads",
        type=int,
        default=limits.threads,
        help=f"threads answering requests (default {limits.threads}); further calls wait in line, and "
        f"beyond {limits.max_pending} waiting they are answered 503 ServiceUnavailable with Retry-After. "
        "At most half of them receive uploads to the temporary bucket at once (the next upload is "
        "answered 503 with Retry-After)",
    )
    group.add_argument(
        "--max-connections",
        type=int,
        default=limits.max_connections,
        help=f"open connections at most (default {limits.max_connections}, at most half the open-file "
        "limit); then idle keep-alive connections are closed, or newcomers wait in the backlog",
    )
    group.add_argument(
        "--backlog",
        type=int,
        default=limits.backlog,
        help=f"connections the system queues before the engine accepts them (default {limits.backlog}, "
        "capped by the system's own limit, net.core.somaxconn on Linux)",
    )
    group.add_argument(
        "--header-timeout",
        type=float,
        default=limits.header_timeout,
        help=f"seconds a client has to send its request line and headers (default "
        f"{limits.header_timeout:g}); slower clients are dropped",
    )
    group.add_argument(
        "--idle-timeout",
        type=float,
        default=limits.idle_timeout,
        help=f"seconds an idle keep-alive connection stays open (default {limits.idle_timeout:g})",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="the engine's log on stderr (default warning); debug adds each request and why a download "
        "failed (query strings, which hold signatures, are never logged)",
    )


def _invalid_option(args: argparse.Namespace) -> str | None:
    """What is wrong with the numbers given, if anything."""
    for name in ("workers", "http_threads", "max_connections", "backlog"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    for name in ("qps", "header_timeout", "idle_timeout"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return f"--{name.replace('_', '-')} must be positive"
    return None


def server_limits(args: argparse.Namespace) -> ServerLimits:
    """The HTTP limits the options ask for (the rest keep their defaults)."""
    return ServerLimits(
        backlog=args.backlog,
        threads=args.http_threads,
        max_connections=args.max_connections,
        header_timeout=args.header_timeout,
        idle_timeout=args.idle_timeout,
    )


def _configure_logging(level: str) -> None:
    """The engine's own loggers on stderr, unless the process set up logging already (a test, an app that
    embeds the engine). Only `segflow_engine.*`: urllib3's DEBUG lines would print presigned URLs whole."""
    if logging.getLogger().handlers:
        return
    logger = logging.getLogger("segflow_engine")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level.upper())


def run(args: argparse.Namespace) -> int:
    from segflow.errors import ConfigError
    from segflow_engine.auth import ACCESS_KEYS_ENV, APPCODES_ENV, EngineCredentials
    from segflow_engine.models import check_installed
    from segflow_engine.server import EngineConfig, EngineServer

    problem = _invalid_option(args)
    if problem is not None:
        print(f"segflow engine: {problem}", file=sys.stderr)
        return 2
    _configure_logging(args.log_level)
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
        limits=server_limits(args),
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
