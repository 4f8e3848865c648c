"""`segflow invoke`: run a function's handler here, or the deployed one with `--remote`.

Local mode loads `functions/<name>/index.py` by path and calls `handler(event_bytes, context)` with an
FC-shaped context (`segflow_cli.fccontext`), buckets being directories under `--bucket-dir` (one folder
per bucket name) and the vision endpoints whatever the environment configures — no Docker, as FC would
run it. Remote mode (`segflow_cli.remote`) sends the same event file to the deployed function: through
the FC 3.0 API by default (functions deployed by s.yaml's fc3 component), through the FC 2.0 SDK
`aliyun-fc2` when `--service` names the FC 2.0 service a function belongs to.

Only argument parsing happens at import; everything else is imported inside `run`.
"""

from __future__ import annotations

import argparse
from typing import Any

from segflow_cli.logsetup import add_verbose

CONSOLE_LOG_LEVEL = "INFO"
"""The handler's own log lines, as FC's log shows them."""
FUNCTIONS = ("on_upload", "collect_jobs")
DEPLOYED_NAMES = {"on_upload": "segflow-on-upload", "collect_jobs": "segflow-collect-jobs"}
"""The functionName each handler has in s.yaml."""
TIMEOUTS = {"on_upload": 300, "collect_jobs": 120}
"""Seconds, as in s.yaml: the context's `function.timeout`, from which the handlers take their deadline."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "function", choices=FUNCTIONS, help="the handler to run (functions/<function>/index.py)"
    )
    parser.add_argument("event", help="event JSON file, e.g. events/oss-put-image.json")
    parser.add_argument(
        "--bucket-dir",
        help="local mode: a directory with one folder per bucket (default: SEGFLOW_LOCAL_BUCKET_DIR)",
    )
    parser.add_argument("--functions-dir", help="where functions/<name>/index.py live (default: ./functions)")
    parser.add_argument("--timeout", type=int, help="function timeout in seconds for the local context")
    add_verbose(parser, ", and the traceback of a handler that raises a segflow error")
    remote = parser.add_argument_group(
        "remote mode (the deployed function: FC 3.0 API, or FC 2.0 through aliyun-fc2 with --service)"
    )
    remote.add_argument("--remote", action="store_true", help="invoke the deployed function instead")
    remote.add_argument(
        "--function-name",
        "--function",
        dest="function_name",
        help="deployed function name (default: segflow-on-upload / segflow-collect-jobs, as in s.yaml)",
    )
    remote.add_argument("--region", help="FC region (default: SEGFLOW_REGION, cn-shanghai)")
    remote.add_argument(
        "--account-id",
        help=(
            "Alibaba Cloud account id, part of the FC endpoint <account_id>.<region>.fc.aliyuncs.com "
            "(default: ALIBABA_CLOUD_ACCOUNT_ID, else asked from STS GetCallerIdentity with your AccessKey)"
        ),
    )
    remote.add_argument(
        "--endpoint",
        help=(
            "FC endpoint instead of https://{account_id}.{region}.fc.aliyuncs.com; {account_id} and "
            "{region} are filled in (default: SEGFLOW_FC_ENDPOINT)"
        ),
    )
    remote.add_argument(
        "--service",
        help=(
            "the function belongs to this FC 2.0 service: invoke it through the FC 2.0 API (aliyun-fc2). "
            "Leave out for FC 3.0 functions, which have no service (what s.yaml deploys)"
        ),
    )
    remote.add_argument("--qualifier", help="version or alias (default: LATEST)")
    remote.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="invoke asynchronously: FC queues the event and answers with its request id",
    )
    remote.add_argument(
        "--log",
        action="store_true",
        help="print the last 4 KB of the function's log to stderr (synchronous invocations only)",
    )


_REMOTE_ONLY = {
    "function_name": "--function",
    "region": "--region",
    "account_id": "--account-id",
    "endpoint": "--endpoint",
    "service": "--service",
    "qualifier": "--qualifier",
    "asynchronous": "--async",
}
"""Options that only mean something with --remote (dest -> flag): given without it, they are a mistake."""


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from segflow.errors import SegflowError

    event_path = Path(args.event)
    try:
        event = event_path.read_bytes()
    except OSError as exc:
        print(f"segflow invoke: cannot read {event_path}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        if args.remote:
            from segflow_cli.remote import run_remote

            function_name = args.function_name or DEPLOYED_NAMES[args.function]
            return run_remote(args, function_name, event, dict(os.environ))
        given = [flag for dest, flag in _REMOTE_ONLY.items() if getattr(args, dest)]
        if given:
            print(f"segflow invoke: {', '.join(given)} only apply with --remote", file=sys.stderr)
            return 2
        if not (args.bucket_dir or os.environ.get("SEGFLOW_LOCAL_BUCKET_DIR", "").strip()):
            print(
                "segflow invoke: --bucket-dir (or SEGFLOW_LOCAL_BUCKET_DIR) is required without --remote",
                file=sys.stderr,
            )
            return 2
        return _run_local(args, event, dict(os.environ))
    except SegflowError as exc:
        print(f"segflow invoke: {exc.message} ({exc.code})", file=sys.stderr)
        return 2


def find_handler_file(function: str, functions_dir: str | None) -> Any:
    """functions/<function>/index.py: under --functions-dir, the current directory, or the checkout."""
    from pathlib import Path

    from segflow.errors import ConfigError

    candidates = (
        [Path(functions_dir)]
        if functions_dir
        else [Path.cwd() / "functions", Path(__file__).resolve().parents[2] / "functions"]
    )
    for directory in candidates:
        path = directory / function / "index.py"
        if path.is_file():
            return path
    raise ConfigError(f"no handler file {function}/index.py under {', '.join(map(str, candidates))}")


def load_handler(path: Any, function: str) -> Any:
    """The `handler` of a function's index.py, loaded by path (FC imports it as module `index`)."""
    import importlib.util

    from segflow.errors import ConfigError

    spec = importlib.util.spec_from_file_location(f"segflow_function_{function}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    handler = getattr(module, "handler", None)
    if not callable(handler):
        raise ConfigError(f"{path} has no handler(event, context)")
    return handler


def _run_local(args: argparse.Namespace, event: bytes, environ: dict[str, str]) -> int:
    import sys

    from segflow.credentials import credentials_from_context
    from segflow.errors import ConfigError, SegflowError
    from segflow.logs import install_redaction
    from segflow.services.deps import use_handler_deps
    from segflow.settings import Settings
    from segflow_cli.output import print_body, print_json

    settings = Settings.from_env(environ)
    install_redaction(settings.secret_values)
    try:
        credentials_from_context(None, settings.credential_env)
    except ConfigError as error:
        raise ConfigError(
            f"{error.message}. With a local `segflow engine`, export the development key pair it printed "
            "when it started",
            code=error.code,
        ) from error
    handler, context = _local_handler(args, settings, environ)
    try:
        result = handler(event, context)
    except Exception as exc:  # the handler's failure is the invocation's result, as FC reports it
        print_json({"errorType": type(exc).__name__, "errorMessage": str(exc)})
        print(
            f"segflow invoke: {args.function} raised {type(exc).__name__} ({exc}); FC would deliver the "
            "event again",
            file=sys.stderr,
        )
        if args.verbose or not isinstance(exc, SegflowError):  # a segflow error says it all in one line
            import traceback

            traceback.print_exc(file=sys.stderr)
        return 1
    finally:
        use_handler_deps(None)
    print_body(result)
    return _refused_event(args.function, event, result)


def _local_handler(args: argparse.Namespace, settings: Any, environ: dict[str, str]) -> tuple[Any, Any]:
    """The function's handler and an FC-shaped context, its `Deps` over the local bucket directory."""
    import logging
    import os
    from pathlib import Path

    from segflow.services.deps import Deps, use_handler_deps
    from segflow_cli.fccontext import local_context
    from segflow_cli.localbucket import LocalBuckets
    from segflow_cli.urlserver import BackgroundUrls

    root = Path(args.bucket_dir or environ["SEGFLOW_LOCAL_BUCKET_DIR"].strip())
    # The engine fetches a queued video's input long after this process exits: its URLs are served by
    # the bucket directory's background server (started on the first URL, stops once they all expired).
    presigner = BackgroundUrls(root) if hasattr(os, "fork") else None
    if presigner is None:
        logging.getLogger("segflow.urls").warning(
            "no background URL server on this platform: presigned URLs stop working when this invoke "
            "exits, so queued video jobs may fail with InvalidFile.Download (use `segflow run` instead)"
        )
    buckets = LocalBuckets(root, presign_server=presigner)
    handler = load_handler(find_handler_file(args.function, args.functions_dir), args.function)
    context = local_context(
        settings, DEPLOYED_NAMES[args.function], timeout=args.timeout or TIMEOUTS[args.function]
    )
    use_handler_deps(Deps.from_settings(settings, context, storage_factory=buckets, buckets=buckets.names()))
    return handler, context


def _refused_event(function: str, event: bytes, result: Any) -> int:
    """1 when the event itself was malformed: the handler returns normally then (a retry cannot fix it,
    so FC must not retry), but a script running `segflow invoke` must notice."""
    import json
    import sys

    try:
        json.loads(event)
    except ValueError as error:
        print(f"segflow invoke: the event is not JSON ({error}); {function} ignored it", file=sys.stderr)
        return 1
    try:
        answer = json.loads(result) if isinstance(result, (str, bytes, bytearray)) else result
    except ValueError:
        return 0
    outcomes = answer.get("outcomes", []) if isinstance(answer, dict) else []
    refused = [o for o in outcomes if isinstance(o, dict) and o.get("code") == "InvalidEvent"]
    for outcome in refused:
        print(
            f"segflow invoke: the event was refused: {outcome.get('detail')} (InvalidEvent)", file=sys.stderr
        )
    return 1 if refused else 0
