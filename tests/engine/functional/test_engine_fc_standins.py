"""The platform in front of the engine on Function Compute, on loopback: an HTTP trigger with
`authType: function` (tests/support/fc_trigger.py) and the asynchronous InvokeFunction API
(tests/support/fc_standin.py), each built from FC's documents, in front of two recording instances.

GIVEN two instances that record what reaches them and answer like the engine
WHEN  segflow's client signs with SEGFLOW_SIGNATURE_VERSION=fc-trigger (the function role's STS key), or a
      request is unsigned, wrongly signed, stale or over FC's limits, or an event is invoked asynchronously
THEN  only the well-signed requests reach an instance, with FC's context headers and
      `x-fc-control-path: /http-invoke`, spread over both, without the headers a function may not answer;
      refusals carry FC's documented codes and are deployment faults for the pipeline; an asynchronous event
      arrives as `POST /invoke` and is retried on failure.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from segflow.client import Endpoints, VisionClient
from segflow.errors import ApiError
from segflow.failure_policy import Decisions, decide
from segflow.retry import RetryPolicy
from segflow.signing import Credentials, sign_fc_trigger
from segflow_cli.fcapi import FcClient
from tests.support.fc_standin import FcStandIn, FunctionContext
from tests.support.fc_trigger import NOT_SIGNED, STALE, FcHttpTrigger

CALLER = Credentials("STS.NCallerRoleKey", "caller-sts-secret", "CAIS+caller/token=")  # the functions' role
ENGINE_ROLE = Credentials("STS.NEngineRoleKey", "engine-sts-secret", "CAIS+engine/token=")
CONTEXT = FunctionContext("segflow-engine", ENGINE_ROLE)


@dataclass
class Recorder:
    """An instance that records each request and answers a job poll; `fail_invokes` makes POST /invoke
    fail that many times (an instance dying mid-job)."""

    name: str
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    fail_invokes: int = 0
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def _recording_handler(recorder: Recorder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            recorder.seen.append((self.command, self.path, headers, body))
            status, fc_status = 200, "200"
            if self.path == "/invoke" and recorder.fail_invokes > 0:
                recorder.fail_invokes -= 1
                status, fc_status = 500, "404"
            document = {"RequestId": "R-" + recorder.name, "Data": {"JobId": "J", "Status": "QUEUING"}}
            payload = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("x-fc-status", fc_status)  # a function may set it; FC keeps it to itself
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

    return Handler


@pytest.fixture
def instances() -> Iterator[list[Recorder]]:
    recorders = [Recorder("a"), Recorder("b")]
    for recorder in recorders:
        recorder.server = ThreadingHTTPServer(("127.0.0.1", 0), _recording_handler(recorder))
        threading.Thread(target=recorder.server.serve_forever, args=(0.05,), daemon=True).start()
    yield recorders
    for recorder in recorders:
        assert recorder.server is not None
        recorder.server.shutdown()
        recorder.server.server_close()


@pytest.fixture
def trigger(instances: list[Recorder]) -> Iterator[FcHttpTrigger]:
    keys = {CALLER.access_key_id: (CALLER.access_key_secret, CALLER.security_token or "")}
    with FcHttpTrigger([i.url for i in instances], keys=keys, context=CONTEXT) as running:
        yield running
    assert running.errors == []


def _client(trigger: FcHttpTrigger, credentials: Credentials = CALLER) -> VisionClient:
    endpoints = Endpoints(imageseg=trigger.base_url, videoseg=trigger.base_url, openplatform=trigger.base_url)
    return VisionClient(
        credentials, endpoints=endpoints, signature_version="fc-trigger", retry=RetryPolicy(max_attempts=1)
    )


def test_a_request_signed_for_the_trigger_reaches_an_instance_with_fcs_context(
    trigger: FcHttpTrigger, instances: list[Recorder]
) -> None:
    result = _client(trigger).get_async_job_result("J")
    assert result.status == "QUEUING"
    (forwarded,) = trigger.forwarded
    headers = forwarded.headers
    assert headers["x-fc-control-path"] == "/http-invoke"
    assert headers["x-fc-function-name"] == "segflow-engine" and headers["x-fc-region"] == "cn-shanghai"
    assert (
        headers["x-fc-access-key-id"] == ENGINE_ROLE.access_key_id
    )  # the engine's own role, not the caller's
    assert headers["x-acs-action"] == "GetAsyncJobResult"  # the request itself passes through unchanged
    assert forwarded.fc_status == "200"


def test_the_answer_loses_the_headers_a_function_may_not_set(trigger: FcHttpTrigger) -> None:
    signed = sign_fc_trigger("GET", "/", {"Action": "X"}, CALLER)
    response = requests.get(f"{trigger.base_url}/?Action=X", headers=signed.headers, timeout=10)
    assert response.status_code == 200
    assert "x-fc-status" not in response.headers and "x-fc-request-id" in response.headers


def test_requests_are_spread_over_the_instances(trigger: FcHttpTrigger, instances: list[Recorder]) -> None:
    client = _client(trigger)
    for _ in range(6):
        client.get_async_job_result("J")
    assert all(len(instance.seen) >= 2 for instance in instances)


def test_an_instance_that_is_gone_is_left_out(trigger: FcHttpTrigger, instances: list[Recorder]) -> None:
    gone = instances[0].server
    assert gone is not None
    gone.shutdown()
    gone.server_close()
    client = _client(trigger)
    for _ in range(3):
        assert client.get_async_job_result("J").status == "QUEUING"
    assert {f.instance for f in trigger.forwarded} == {instances[1].url}


def test_an_unsigned_request_is_refused_with_the_documented_text(
    trigger: FcHttpTrigger, instances: list[Recorder]
) -> None:
    response = requests.post(f"{trigger.base_url}/?Action=SegmentBody", timeout=10)
    assert response.status_code == 400
    assert response.json()["Code"] == "MissingRequiredHeader" and response.json()["Message"] == NOT_SIGNED
    assert not instances[0].seen and not instances[1].seen


@pytest.mark.parametrize(
    ("credentials", "code"),
    [
        (Credentials(CALLER.access_key_id, "wrong-secret", CALLER.security_token), "SignatureNotMatch"),
        (Credentials(CALLER.access_key_id, CALLER.access_key_secret, "CAIS+other"), "SignatureNotMatch"),
        (Credentials("STS.NUnknownKey", "s", "t"), "InvalidAccessKeyID"),
    ],
    ids=["wrong-secret", "other-token", "unknown-key"],
)
def test_a_wrong_signature_is_refused_and_is_a_deployment_fault(
    trigger: FcHttpTrigger, instances: list[Recorder], credentials: Credentials, code: str
) -> None:
    with pytest.raises(ApiError) as refused:
        _client(trigger, credentials).get_async_job_result("J")
    assert (refused.value.code, refused.value.http_status) == (code, 403)
    assert decide(refused.value) == Decisions.FAULT  # the upload waits for the deployment to be fixed
    assert not instances[0].seen and not instances[1].seen


def test_a_stale_signature_is_refused(trigger: FcHttpTrigger) -> None:
    then = datetime.now(timezone.utc) - timedelta(minutes=16)
    signed = sign_fc_trigger("POST", "/", {"Action": "X"}, CALLER, now=then)
    response = requests.post(f"{trigger.base_url}/?Action=X", headers=signed.headers, timeout=10)
    assert (response.status_code, response.json()["Message"]) == (403, STALE)


def test_a_changed_query_breaks_the_signature(trigger: FcHttpTrigger) -> None:
    signed = sign_fc_trigger("POST", "/", {"ImageURL": "http://h/a.png"}, CALLER)
    response = requests.post(
        f"{trigger.base_url}/?ImageURL=http%3A%2F%2Fh%2Fb.png", headers=signed.headers, timeout=10
    )
    assert (response.status_code, response.json()["Code"]) == (403, "SignatureNotMatch")


@pytest.mark.parametrize(
    ("extra_headers", "query"),
    [({"x-fc-invocation-type": "Async"}, "X=1"), ({"x-big": "v" * 9000}, "X=1"), ({}, "X=" + "a" * 5000)],
    ids=["x-fc-header", "headers-over-8KB", "path-over-4KB"],
)
def test_requests_beyond_fcs_limits_are_refused(
    trigger: FcHttpTrigger, extra_headers: dict[str, str], query: str
) -> None:
    response = requests.post(f"{trigger.base_url}/?{query}", headers=extra_headers, timeout=10)
    assert (response.status_code, response.json()["Code"]) == (400, "InvalidArgument")


# -- asynchronous invocations of the engine itself ----------------------------------------------------------


@pytest.fixture
def fc_api(instances: list[Recorder]) -> Iterator[FcStandIn]:
    keys = {ENGINE_ROLE.access_key_id: ENGINE_ROLE.access_key_secret}
    with FcStandIn(secrets=keys) as api:
        api.deploy("segflow-engine", instances=tuple(i.url for i in instances), context=CONTEXT)
        yield api


def test_an_async_invocation_arrives_as_post_invoke_with_the_payload(
    fc_api: FcStandIn, instances: list[Recorder]
) -> None:
    with FcClient(ENGINE_ROLE, fc_api.url) as client:
        accepted = client.invoke("segflow-engine", b'{"job": "J"}', asynchronous=True)
    fc_api.drain()
    assert accepted.status == 202
    (delivery,) = fc_api.deliveries
    assert delivery.succeeded and delivery.request_id == accepted.request_id
    (method, path, headers, body) = next(seen for i in instances for seen in i.seen)
    assert (method, path, body) == ("POST", "/invoke", b'{"job": "J"}')
    assert headers["x-fc-control-path"] == "/invoke"
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-fc-request-id"] == accepted.request_id


def test_a_failed_delivery_is_retried_on_another_instance(
    fc_api: FcStandIn, instances: list[Recorder]
) -> None:
    instances[0].fail_invokes = instances[1].fail_invokes = 1  # each instance fails once
    with FcClient(ENGINE_ROLE, fc_api.url) as client:
        client.invoke("segflow-engine", b"{}", asynchronous=True)
    fc_api.drain()
    assert [d.succeeded for d in fc_api.deliveries] == [False, False, True]
    assert fc_api.deliveries[0].fc_status == "404"
    assert len({d.instance for d in fc_api.deliveries}) == 2
    assert fc_api.async_failures == []


def test_an_event_failing_every_retry_is_given_up_after_fcs_default_three(
    fc_api: FcStandIn, instances: list[Recorder]
) -> None:
    instances[0].fail_invokes = instances[1].fail_invokes = 10
    with FcClient(ENGINE_ROLE, fc_api.url) as client:
        client.invoke("segflow-engine", b"{}", asynchronous=True)
    fc_api.drain()
    assert len(fc_api.deliveries) == 4 and not any(d.succeeded for d in fc_api.deliveries)
    assert len(fc_api.async_failures) == 1


def test_an_async_payload_over_128_kb_is_refused(fc_api: FcStandIn) -> None:
    with FcClient(ENGINE_ROLE, fc_api.url) as client, pytest.raises(Exception, match="EntityTooLarge"):
        client.invoke("segflow-engine", b"x" * (128 * 1024 + 1), asynchronous=True)
    assert fc_api.deliveries == []
