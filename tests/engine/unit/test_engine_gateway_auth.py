"""`SEGFLOW_ENGINE_AUTH=fc-gateway`: the engine behind Function Compute's HTTP trigger with `authType:
function` trusts the gateway's signature check (FC, "Configure signature authentication for HTTP triggers":
the gateway verifies ACS3-HMAC-SHA256 before the function is invoked), and refuses the setting outside FC.

GIVEN the engine as a WSGI application (stub models), trusting the gateway or checking its own keys
WHEN  a call signed for the trigger with a key the engine cannot know arrives (the functions' role, as
      `SEGFLOW_SIGNATURE_VERSION=fc-trigger` signs it), or the setting is read in and out of FC
THEN  a trusting engine answers it with the parameters the caller sent (Action and Version from the
      x-acs-* headers), a key-checking one refuses it, and the setting needs FC's own variables.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from segflow.errors import ConfigError
from segflow.signing import Credentials, sign_fc_trigger
from segflow_engine.app import Engine
from segflow_engine.auth import EngineCredentials, gateway_trusted
from segflow_engine.config import EngineConfig
from tests.support.engine_server import StubActions

CALLER = Credentials("STS.NCallerRoleKey", "caller-sts-secret", "CAIS+caller/token=")
FC_ENV = {"FC_FUNCTION_NAME": "segflow-engine", "FC_REGION": "cn-shanghai"}  # FC, "Environment variables"


@pytest.fixture(params=[True, False], ids=["trusts-gateway", "checks-keys"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    config = EngineConfig(trust_gateway=request.param)
    app = Engine(EngineCredentials.build(), StubActions(), tmp_path, "http://engine.test", config)
    yield app
    app.close()


def _trigger_call(app: Engine, action: str, version: str, query: dict[str, str]) -> tuple[int, Any]:
    signed = sign_fc_trigger("POST", "/", query, CALLER)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/",
        "QUERY_STRING": "&".join(f"{k}={v}" for k, v in query.items()),
    }
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(b"")
    for name, value in {**signed.headers, "x-acs-action": action, "x-acs-version": version}.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: list[str] = []
    body = b"".join(app(environ, lambda status, headers, exc_info=None: started.append(status)))
    return int(started[0].split()[0]), json.loads(body)


def test_a_call_the_trigger_verified_is_answered_only_by_a_trusting_engine(engine: Engine) -> None:
    status, body = _trigger_call(engine, "GetAsyncJobResult", "2020-03-20", {"JobId": "NO-SUCH-JOB"})
    if engine.config.trust_gateway:
        # Routed and answered: the job is unknown, so the parameters arrived as the caller sent them.
        assert (status, body["Code"]) == (400, "InvalidParameter") and "NO-SUCH-JOB" in body["Message"]
    else:
        # The trigger's signature is not the API's v3 one (no nonce, no body hash): refused unread.
        assert (status, body["Code"]) == (400, "MissingParameter") and "NO-SUCH-JOB" not in body["Message"]


def test_keys_are_checked_unless_the_setting_says_otherwise() -> None:
    assert gateway_trusted({}) is False
    assert gateway_trusted({"SEGFLOW_ENGINE_AUTH": "keys", **FC_ENV}) is False
    assert gateway_trusted({"SEGFLOW_ENGINE_AUTH": "FC-Gateway", **FC_ENV}) is True


@pytest.mark.parametrize(
    "environ",
    [
        {"SEGFLOW_ENGINE_AUTH": "fc-gateway"},
        {"SEGFLOW_ENGINE_AUTH": "fc-gateway", "FC_FUNCTION_NAME": "segflow-engine"},
        {"SEGFLOW_ENGINE_AUTH": "anonymous", **FC_ENV},
    ],
    ids=["outside-fc", "half-an-fc-environment", "unknown-mode"],
)
def test_the_gateway_is_trusted_inside_function_compute_only(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="SEGFLOW_ENGINE_AUTH"):
        gateway_trusted(environ)
