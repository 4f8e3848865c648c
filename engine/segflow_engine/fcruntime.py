"""The engine as Function Compute's custom runtime calls it: a WSGI middleware around the engine.

From FC's "Custom runtime: specification" (help.aliyun.com/en/functioncompute/fc-2-0/user-guide/
custom-runtime-specification-details; FC 3.0 keeps it for custom runtimes) and "Lifecycle hooks for
function instances in a custom runtime":

- `x-fc-control-path` says what a request is: `/http-invoke` a call through the HTTP trigger (passed to the
  engine as it came), `/invoke` an event (here: an asynchronous job the engine queued for itself, run to its
  end by `invoke`), `/initialize` the Initializer hook (the models load here, `initialize`), `/pre-stop`
  the PreStop hook (nothing to do: the engine keeps nothing on the instance);
- every answer carries `x-fc-status`, 200 when the invocation succeeded and 404 when it failed (an engine
  error, an initializer or a job that failed): FC counts a call as failed only by it, and retries a failed
  asynchronous invocation;
- each invocation writes `FC Invoke Start RequestId: <id>` and `FC Invoke End RequestId: <id>` on stdout,
  and log lines follow "Print function logs": `<UTC time> <request id> [<level>] <message>`
  (`FcLogFormat`);
- the role's current STS key comes with every request (`x-fc-access-key-id`, …) and replaces the one the
  instance started with (`segflow_engine.cloud.RoleKeys`).
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any, TextIO

from segflow_engine.cloud import RoleKeys
from segflow_engine.handler import StartResponse
from segflow_engine.wsgiserver import WsgiApp

LOG = logging.getLogger("segflow_engine.fc")

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("fc_request_id", default="-")
OK, FAILED = "200", "404"  # x-fc-status
MAX_EVENT_BYTES = 128 * 1024  # an asynchronous invocation's payload ("Web functions": 128 KB)


class FcLogFormat(logging.Formatter):
    """`2026-12-01T08:00:00.123Z <request id> [INFO] message` ("Print function logs")."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        line = f"{when}Z {REQUEST_ID.get()} [{record.levelname}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class FcRuntime:
    """Wraps the engine's WSGI application for FC's custom runtime (module docstring)."""

    def __init__(
        self,
        app: WsgiApp,
        *,
        initialize: Callable[[], None],
        invoke: Callable[[bytes], str] | None,
        keys: RoleKeys | None = None,
        out: TextIO | None = None,
    ) -> None:
        self._app = app
        self._initialize = initialize
        self._invoke = invoke
        self._keys = keys
        self._out = out

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request_id = str(environ.get("HTTP_X_FC_REQUEST_ID") or "")
        if self._keys is not None:
            self._keys.update(
                str(environ.get("HTTP_X_FC_ACCESS_KEY_ID") or ""),
                str(environ.get("HTTP_X_FC_ACCESS_KEY_SECRET") or ""),
                str(environ.get("HTTP_X_FC_SECURITY_TOKEN") or ""),
            )
        token = REQUEST_ID.set(request_id or "-")
        if request_id:
            self._line(f"FC Invoke Start RequestId: {request_id}")
        try:
            return self._route(str(environ.get("HTTP_X_FC_CONTROL_PATH") or ""), environ, start_response)
        finally:
            if request_id:
                self._line(f"FC Invoke End RequestId: {request_id}")
            REQUEST_ID.reset(token)

    def _route(self, control: str, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if control == "/initialize":
            return self._hook("initializer", self._initialize, start_response)
        if control == "/invoke":
            payload = _body(environ)
            invoke = self._invoke
            if invoke is None:
                return _answer(start_response, 404, FAILED, b"this engine queues no jobs (no bucket)")
            return self._hook("invocation", lambda: LOG.info("job: %s", invoke(payload)), start_response)
        if control == "/pre-stop":
            return _answer(start_response, 200, OK, b"")

        def with_status(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            failed = int(status.split(" ", 1)[0]) >= 500
            return start_response(status, [*headers, ("x-fc-status", FAILED if failed else OK)], exc_info)

        return self._app(environ, with_status)

    def _hook(self, what: str, work: Callable[[], object], start_response: StartResponse) -> Iterable[bytes]:
        try:
            work()
        except Exception as exc:
            LOG.exception("the %s failed", what)
            return _answer(start_response, 500, FAILED, f"{what} failed: {type(exc).__name__}".encode())
        return _answer(start_response, 200, OK, b"")

    def _line(self, text: str) -> None:
        out = self._out or sys.stdout
        out.write(text + "\n")
        out.flush()


def _body(environ: dict[str, Any]) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    data: bytes = environ["wsgi.input"].read(min(length, MAX_EVENT_BYTES)) if length > 0 else b""
    return data


def _answer(start_response: StartResponse, status: int, fc_status: str, body: bytes) -> list[bytes]:
    phrase = {200: "OK", 404: "Not Found", 500: "Internal Server Error"}[status]
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("x-fc-status", fc_status),
    ]
    start_response(f"{status} {phrase}", headers)
    return [body]
