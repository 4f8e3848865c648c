"""The engine is a WSGI application: called with an environ, no socket, no server.

GIVEN an `Engine` (stub models) and environs built as any WSGI server builds them (`wsgiref.util`)
WHEN  it is called with a signed call, an unsigned result URL, a HEAD, or an API call's body over 1 MiB
THEN  it answers as it does over HTTP: the service's JSON, OSS's XML, no body for HEAD, 413 for the body.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest

from segflow.signing import Credentials, sign_v1
from segflow_engine.app import Engine
from segflow_engine.auth import EngineCredentials
from segflow_engine.config import EngineConfig
from tests.support.engine_server import StubActions


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    app = Engine(EngineCredentials.build(), StubActions(), tmp_path, "http://engine.test", EngineConfig())
    yield app
    app.close()


def _call(
    app: Engine, method: str, path: str, query: str = "", body: bytes = b""
) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}
    if body:
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(body)
    started: list[tuple[str, list[tuple[str, str]]]] = []
    chunks = app(environ, lambda status, headers, exc_info=None: started.append((status, headers)))
    status, headers = started[0]
    return status, dict(headers), b"".join(chunks)


def test_a_signed_call_is_answered_with_the_services_json(engine: Engine) -> None:
    key_id, secret = engine.credentials.first_key
    params = {"Action": "GetAsyncJobResult", "Version": "2020-03-20", "JobId": "no-such-job"}
    signed = sign_v1("GET", params, Credentials(key_id, secret))
    status, headers, body = _call(engine, "GET", "/", urlencode(signed.params))
    assert status.startswith("400 ") and headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["Code"] == "InvalidParameter"  # signed right: no such job
    assert headers["Content-Length"] == str(len(body))


def test_an_unsigned_result_url_is_refused_in_osss_xml_and_head_has_no_body(engine: Engine) -> None:
    status, _, body = _call(engine, "GET", "/results/x/y")
    assert status.startswith("403 ") and b"<Code>AccessDenied</Code>" in body
    head_status, head_headers, head_body = _call(engine, "HEAD", "/results/x/y")
    assert (
        head_status.startswith("403 ")
        and head_body == b""
        and head_headers["Content-Length"] == str(len(body))
    )


def test_an_api_calls_body_over_one_mib_is_refused_unread(engine: Engine) -> None:
    status, _, body = _call(engine, "POST", "/", body=b"a" * (1024 * 1024 + 1))
    assert status.startswith("413 ") and json.loads(body)["Code"] == "RequestEntityTooLarge"
