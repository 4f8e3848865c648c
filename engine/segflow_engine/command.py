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
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from segflow_engine.consolelog import route_logs
from segflow_engine.hosts import is_loopback
from segflow_engine.limits import ServerLimits

if TYPE_CHECKING:
    from segflow_engine.auth import EngineCredentials
    from segflow_engine.fetch import AddressRule
    from segflow_engine.server import EngineServer

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
    _add_input_options(parser)
    _add_http_options(parser)


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs (the URLs the engine downloads)")
    group.add_argument(
        "--refuse-private-inputs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="download inputs only from public addresses, checked on the address each connection is made "
        "to: never loopback, private, link-local (cloud metadata 169.254.169.254, 100.100.100.200), CGNAT, "
        "multicast or unspecified (default: on when --host is not a loopback address; off on loopback, "
        "where a redirect to another host must still be public)",
    )
    group.add_argument(
        "--allow-input-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="a host inputs may come from whatever its address, e.g. the OSS endpoint the engine uses "
        "(repeatable)",
    )


def address_rule(args: argparse.Namespace) -> AddressRule:
    """The input address rule the options ask for."""
    from segflow_engine.fetch import AddressRule

    refuse = args.refuse_private_inputs
    public_only = not is_loopback(args.host) if refuse is None else refuse
    allowed = frozenset(host.strip().lower() for host in args.allow_input_host if host.strip())
    return AddressRule(public_only=bool(public_only), allowed_hosts=allowed)


def _add_http_options(parser: argparse.ArgumentParser) -> None:
    limits = ServerLimits()
    group = parser.add_argument_group(
        "HTTP limits (the server is waitress: it reads each request whole before a thread takes it, so a "
        "slow or idle client holds a connection, never a thread, until --idle-timeout of silence; heads "
        "at most 64 KiB, API call bodies 1 MiB, uploads to the temporary bucket 1 GiB, received into a "
        "temporary file)"
    )
    group.add_argument(
        "--http-threads",
        type=int,
        default=limits.threads,
        help=f"threads answering requests (default {limits.threads}); further requests wait in line, at "
        "most one per open connection",
    )
    group.add_argument(
        "--max-connections",
        type=int,
        default=limits.max_connections,
        help=f"open connections at most (default {limits.max_connections}, at most half the open-file "
        "limit); newcomers then wait in the backlog until one closes",
    )
    group.add_argument(
        "--backlog",
        type=int,
        default=limits.backlog,
        help=f"connections the system queues before the engine accepts them (default {limits.backlog}, "
        "capped by the system's own limit, net.core.somaxconn on Linux)",
    )
    group.add_argument(
        "--idle-timeout",
        type=int,
        default=limits.idle_timeout,
        help=f"whole seconds a connection may stay silent — kept alive between requests, or a client that "
        f"stopped sending or reading — before it is closed (default {limits.idle_timeout}; Function "
        "Compute's custom runtimes need 900 or more)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="segflow's log on stderr (default warning); debug adds each request and why a download "
        "failed (query strings, which hold signatures, are never logged), and acts as --verbose",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="--log-level debug, and the model libraries' own lines (TensorFlow Lite, MediaPipe) on stderr "
        "too; without it they go to the engine log",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=None,
        help="the engine log: the libraries' lines, waitress's, and segflow's own (default engine.log in "
        "--state-dir, else segflow-engine-PID.log in the system's temporary folder)",
    )


def _invalid_option(args: argparse.Namespace) -> str | None:
    """What is wrong with the numbers given, if anything."""
    for name in ("workers", "http_threads", "max_connections", "backlog", "idle_timeout"):
        if getattr(args, name) < 1:
            return f"--{name.replace('_', '-')} must be at least 1"
    if args.qps is not None and args.qps <= 0:
        return "--qps must be positive"
    return None


def server_limits(args: argparse.Namespace) -> ServerLimits:
    """The HTTP limits the options ask for (the rest keep their defaults)."""
    return ServerLimits(
        backlog=args.backlog,
        threads=args.http_threads,
        max_connections=args.max_connections,
        idle_timeout=args.idle_timeout,
    )


def log_file_of(args: argparse.Namespace) -> Path:
    """`--log-file`, else `engine.log` in `--state-dir`, else a file of the system's temporary folder that
    outlives the engine (a temporary state folder does not)."""
    if args.log_file is not None:
        return Path(args.log_file)
    if args.state_dir is not None:
        return Path(args.state_dir) / "engine.log"
    import tempfile

    return Path(tempfile.gettempdir()) / f"segflow-engine-{os.getpid()}.log"


def run(args: argparse.Namespace) -> int:
    problem = _invalid_option(args)
    if problem is not None:
        print(f"segflow engine: {problem}", file=sys.stderr)
        return 2
    verbose = args.verbose or args.log_level == "debug"
    log_file = log_file_of(args)
    route_logs("debug" if args.verbose else args.log_level, log_file, verbose=verbose)
    started = _start(args)
    if isinstance(started, int):
        return started
    server, credentials = started

    def banner() -> None:
        _print_banner(server.base_url, args, credentials, None if verbose else log_file)

    serve_until_stopped(server, banner)
    return 0


def serve_until_stopped(server: EngineServer, started: Callable[[], None] = lambda: None) -> None:
    """Serve until SIGINT or SIGTERM (calling `started` once listening), then stop: running model work
    finishes first. `segflow engine` and the engine on Function Compute stop alike."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        started()
        while not stop.wait(0.5):
            pass
        print("segflow engine: stopping (running model work finishes first)", file=sys.stderr)
    finally:
        server.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _start(args: argparse.Namespace) -> tuple[EngineServer, EngineCredentials] | int:
    """The engine, its models loaded (unless --no-warm-up) and its port bound; or the exit status."""
    from segflow.errors import ConfigError
    from segflow_engine.auth import EngineCredentials, gateway_trusted
    from segflow_engine.models import check_installed
    from segflow_engine.server import EngineConfig, EngineServer

    try:
        trust_gateway = gateway_trusted(os.environ)  # fc-gateway only inside Function Compute
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
        input_addresses=address_rule(args),
        trust_gateway=trust_gateway,
    )
    try:
        return EngineServer(config, credentials), credentials
    except OSError as exc:
        print(
            f"segflow engine: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1


def _print_banner(
    base_url: str, args: argparse.Namespace, credentials: EngineCredentials, log_file: Path | None
) -> None:
    from segflow_engine.auth import ACCESS_KEYS_ENV, APPCODES_ENV

    print(f"segflow engine listening on {base_url} (model workers: {args.workers})")
    endpoint = base_url.split("//", 1)[-1]
    print(f"  imageseg 2019-12-30 and videoseg 2020-03-20 RPC: {base_url}/  (SDK endpoint {endpoint})")
    print(f"  PicWish: POST {base_url}/tasks/visual/segmentation")
    if credentials.generated_keys:
        key_id, secret = credentials.first_key
        print(f"  development key pair (set {ACCESS_KEYS_ENV}=id:secret to choose your own):")
        print(f"    AccessKeyId     {key_id}")
        print(f"    AccessKeySecret {secret}")
    else:
        print(f"  AccessKeyIds from {ACCESS_KEYS_ENV}: {', '.join(sorted(credentials.access_keys))}")
    if credentials.generated_appcodes:
        print(f"  development PicWish AppCode (set {APPCODES_ENV} to choose): {credentials.first_appcode}")
    else:
        print(f"  PicWish AppCodes from {APPCODES_ENV}: {len(credentials.appcodes)}")
    rule = address_rule(args)
    reach = "public addresses only" if rule.public_only else "any address (a redirect elsewhere: public only)"
    print(f"  inputs: {reach}"
          + (f", and {', '.join(sorted(rule.allowed_hosts))}" if rule.allowed_hosts else ""))  # fmt: skip
    if log_file is not None:
        print(f"  log: {log_file}")
    if not is_loopback(args.host):
        print(f"  warning: bound to {args.host}, reachable from other machines", file=sys.stderr)
    sys.stdout.flush()
