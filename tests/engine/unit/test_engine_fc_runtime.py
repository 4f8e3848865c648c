"""The engine as FC's custom runtime calls it (`segflow_engine.fcruntime.FcRuntime`), without a network.

From FC's "Custom runtime: specification" and "Lifecycle hooks for function instances in a custom runtime":
`x-fc-control-path` tells an HTTP call (`/http-invoke`), an event (`/invoke`) and the Initializer
(`/initialize`) apart; every answer carries `x-fc-status` (200 success, 404 failure); each invocation writes
`FC Invoke Start RequestId: <id>` and `FC Invoke End RequestId: <id>` on stdout; log lines are
`<UTC time> <request id> [<level>] <message>` ("Print function logs"); the role's key comes with each call.

GIVEN a runtime around a recording WSGI application, with an initializer and an event handler
WHEN  FC sends each kind of request, and the application, the initializer or the event fails
THEN  each is routed, answered with its x-fc-status, framed by the two log lines, and logged in FC's format.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from segflow.signing import Credentials
from segflow_engine.cloud import RoleKeys
from segflow_engine.fcruntime import FcLogFormat, FcRuntime

ROLE = Credentials("STS.Old", "old-secret", "old-token")


class App:
    def __init__(self, status: str = "200 OK") -> None:
        self.status = status
        self.calls: list[str] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls.append(environ["PATH_INFO"])
        logging.getLogger("segflow_engine.server").warning("answering %s", environ["PATH_INFO"])
        start_response(self.status, [("Content-Type", "application/json")])
        return [b"{}"]


def _call(
    runtime: FcRuntime, path: str, control: str | None, body: bytes = b""
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "CONTENT_LENGTH": str(len(body))}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(body)
    if control is not None:
        environ.update(
            {
                "HTTP_X_FC_CONTROL_PATH": control,
                "HTTP_X_FC_REQUEST_ID": "REQ-1",
                "HTTP_X_FC_ACCESS_KEY_ID": "STS.Fresh",
                "HTTP_X_FC_ACCESS_KEY_SECRET": "fresh-secret",
                "HTTP_X_FC_SECURITY_TOKEN": "fresh-token",
            }
        )
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks = runtime(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    status, headers = started[0]
    return status, dict(headers), b"".join(chunks)


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


def test_an_http_call_reaches_the_engine_with_its_status_and_log_lines(out: io.StringIO) -> None:
    app = App()
    status, headers, body = _call(
        FcRuntime(app, initialize=lambda: None, invoke=None, out=out), "/", "/http-invoke"
    )
    assert (status, headers["x-fc-status"], body, app.calls) == ("200 OK", "200", b"{}", ["/"])
    assert out.getvalue() == "FC Invoke Start RequestId: REQ-1\nFC Invoke End RequestId: REQ-1\n"


@pytest.mark.parametrize(
    ("status", "fc_status"), [("400 Bad Request", "200"), ("500 Internal Server Error", "404")]
)
def test_only_the_engines_own_failure_is_a_failed_invocation(
    out: io.StringIO, status: str, fc_status: str
) -> None:
    """A refused input is the caller's mistake, answered by a working function; a 5xx is the function's."""
    runtime = FcRuntime(App(status), initialize=lambda: None, invoke=None, out=out)
    assert _call(runtime, "/", "/http-invoke")[1]["x-fc-status"] == fc_status


def test_the_initializer_loads_the_models_and_a_failure_says_so(out: io.StringIO) -> None:
    loaded: list[bool] = []
    runtime = FcRuntime(App(), initialize=lambda: loaded.append(True), invoke=None, out=out)
    status, headers, _ = _call(runtime, "/initialize", "/initialize")
    assert (status, headers["x-fc-status"], loaded) == ("200 OK", "200", [True])
    _call(runtime, "/initialize", "/initialize")  # FC may call it again on the same instance: no harm
    assert loaded == [True, True]

    def broken() -> None:
        raise OSError("no weights")

    failing = FcRuntime(App(), initialize=broken, invoke=None, out=out)
    status, headers, _ = _call(failing, "/initialize", "/initialize")
    assert (status.split()[0], headers["x-fc-status"]) == ("500", "404")


def test_an_event_runs_in_its_invocation_and_a_failure_asks_fc_to_retry(out: io.StringIO) -> None:
    events: list[bytes] = []
    app = App()
    runtime = FcRuntime(app, initialize=lambda: None, invoke=lambda p: events.append(p) or "done", out=out)
    status, headers, _ = _call(runtime, "/invoke", "/invoke", b'{"JobId": "J"}')
    assert (status, headers["x-fc-status"], events, app.calls) == ("200 OK", "200", [b'{"JobId": "J"}'], [])

    def bucket_down(payload: bytes) -> str:
        raise ConnectionError("OSS unreachable")

    failing = FcRuntime(app, initialize=lambda: None, invoke=bucket_down, out=out)
    status, headers, _ = _call(failing, "/invoke", "/invoke", b"{}")
    assert (status.split()[0], headers["x-fc-status"]) == ("500", "404")


def test_the_prestop_hook_and_calls_outside_fc_need_nothing(out: io.StringIO) -> None:
    app = App()
    runtime = FcRuntime(app, initialize=lambda: None, invoke=None, out=out)
    assert _call(runtime, "/pre-stop", "/pre-stop")[0] == "200 OK" and app.calls == []
    assert _call(runtime, "/", None)[1]["x-fc-status"] == "200"  # no request id: no invocation lines
    assert out.getvalue().count("FC Invoke Start") == 1


def test_the_roles_key_of_each_request_replaces_the_one_the_instance_started_with(out: io.StringIO) -> None:
    keys = RoleKeys(ROLE)
    _call(FcRuntime(App(), initialize=lambda: None, invoke=None, keys=keys, out=out), "/", "/http-invoke")
    assert keys.current() == Credentials("STS.Fresh", "fresh-secret", "fresh-token")


def test_log_lines_carry_the_utc_time_the_request_id_and_the_level(out: io.StringIO) -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(FcLogFormat())
    logger = logging.getLogger("segflow_engine.server")
    logger.addHandler(handler)
    try:
        _call(FcRuntime(App(), initialize=lambda: None, invoke=None, out=out), "/a", "/http-invoke")
    finally:
        logger.removeHandler(handler)
    line = stream.getvalue().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z REQ-1 \[WARNING\] answering /a", line), line
