"""A loopback stand-in for Function Compute (3.0 and 2.0 InvokeFunction) and STS GetCallerIdentity.

    with FcStandIn() as fc:
        fc.deploy("segflow-on-upload", returns=b'{"done": 1}', log="FC Invoke Start ...")
        ...  # point the client at fc.url (or HTTP_PROXY=fc.url: it also serves absolute-form targets)
        assert fc.invocations[0].event == event_bytes

What it checks and answers, and where each fact is documented:

- FC 3.0, "API reference (2023-03-30): InvokeFunction": `POST /2023-03-30/functions/{functionName}/
  invocations`, `qualifier` the only query parameter, `x-fc-invocation-type` Sync|Async,
  `x-fc-log-type` None|Tail, the body is the event. Signed ACS3-HMAC-SHA256 (checked with
  `segflow_engine.verify`), the x-fc-* headers among the signed ones, `x-acs-action: InvokeFunction`,
  `x-acs-version: 2023-03-30` (as the official SDK alibabacloud-fc20230330 sends them).
  Answers: sync 200 with the function's result as body; async 202 with an empty body; every answer has
  `x-fc-request-id` ("Common parameters": X-Fc-Request-Id); with Tail, `x-fc-log-result` is the last
  4 KB of the log in base64 ("InvokeFunction": X-Fc-Log-Result). A function that raises answers with
  `x-fc-error-type: UnhandledInvocationError` and `{"errorMessage", "errorType", "stackTrace"}` as body
  on HTTP 200 ("Python runtime: error handling"; "a 2xx response does not guarantee the function
  succeeded", Node.js error handling). API errors are `{"Code", "Message", "RequestId"}` (2023-03-30
  data type "Error", e.g. 404 FunctionNotFound "function not found"), signature errors 403
  SignatureNotMatch / InvalidAccessKeyID ("Error codes"). A payload over 128 KB (asynchronous) or
  32 MB (synchronous) is refused with 400 EntityTooLarge ("What do I do if the EntityTooLarge: payload
  size exceeds maximum allowed size error message is reported?"; "Error codes"). `refuse()` scripts the
  next answers, e.g. 429 ResourceExhausted or 503 ResourceThrottled ("Error codes").
  A function deployed with `runs=` really runs: an accepted asynchronous event is handed to it on a
  background thread (FC's async queue) and, while it raises, delivered again up to 3 more times (the
  default `maxAsyncRetryAttempts`, "Asynchronous invocations"); `drain()` waits for the queue.
  A web function deployed with `instances=` (custom runtime, "Custom runtime: principles" and "Event
  handlers"): an accepted asynchronous event is converted to `POST /invoke` with the payload as body
  (`Content-Type: application/octet-stream`), the context headers of "Context and log format" (FC 3.0:
  `x-fc-request-id`, the role's keys in `x-fc-access-key-id` / `-secret` / `x-fc-security-token`,
  `x-fc-function-name`, `x-fc-region`, … and `x-fc-control-path: /invoke`) and sent to one of the
  instances in turn; a delivery fails when the connection fails, the answer is not 2xx, or it carries
  `x-fc-status: 404` (how a custom runtime reports a failed invocation), and is retried on the next
  instance up to `async_retries` more times (`asyncInvokeConfig.maxAsyncRetryAttempts`, default 3).
- FC 2.0, "API reference (2016-08-15)" and "Signature authentication": `POST /2016-08-15/services/
  {service}[.{qualifier}]/functions/{function}/invocations`, `Authorization: FC <AccessKeyId>:<signature>`
  with signature = Base64(HMAC-SHA256(secret, VERB \\n Content-MD5 \\n Content-Type \\n Date \\n
  CanonicalizedFCHeaders + CanonicalizedResource)), the x-fc-* headers lower-cased and sorted, the
  resource the unescaped path; `Date` at most 15 minutes off; an STS key sends `x-fc-security-token`.
  Errors are `{"errorCode", "errorMessage"}` ("Error codes", FC 2.0 format).
- STS, "GetCallerIdentity" (RPC 2015-04-01, no parameters, callable by any key): `POST /` with
  `x-acs-action: GetCallerIdentity`, answered `{"IdentityType", "AccountId", "RequestId", "PrincipalId",
  "UserId", "Arn"}`; errors in the RPC shape `{"RequestId", "HostId", "Code", "Message"}`.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import json
import re
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from segflow.errors import SigningError
from segflow.signing import Credentials
from tests.support.fake_api import DEFAULT_SECRETS, new_request_id
from tests.support.loopback_http import LoopbackServer

ACCOUNT_ID = "1234567890123456"
FC3_PATH = re.compile(r"^/2023-03-30/functions/([^/]+)/invocations$")
FC2_PATH = re.compile(r"^/2016-08-15/services/([^/]+)/functions/([^/]+)/invocations$")
LOG_TAIL_LIMIT = 4096
MAX_ASYNC_PAYLOAD = 128 * 1024
MAX_SYNC_PAYLOAD = 32 * 1024 * 1024
ASYNC_RETRIES = 3
ASYNC_TIMEOUT = 600.0  # seconds one delivery may run (the function's `timeout`, bounded for tests)
FC2_MAX_DATE_SKEW = 15 * 60


@dataclass(frozen=True)
class FunctionContext:
    """What FC tells a custom-runtime instance about the function on every request (FC 3.0, "Context and
    log format": the x-fc-* request headers). `role` is the function role's STS key."""

    name: str
    role: Credentials
    region: str = "cn-shanghai"
    account_id: str = ACCOUNT_ID
    memory_mb: int = 4096

    def headers(self, request_id: str, control_path: str) -> dict[str, str]:
        return {
            "x-fc-request-id": request_id,
            "x-fc-access-key-id": self.role.access_key_id,
            "x-fc-access-key-secret": self.role.access_key_secret,
            "x-fc-security-token": self.role.security_token or "",
            "x-fc-function-handler": "true",  # meaningless for a custom runtime
            "x-fc-function-memory": str(self.memory_mb),
            "x-fc-region": self.region,
            "x-fc-account-id": self.account_id,
            "x-fc-qualifier": "LATEST",
            "x-fc-version-id": "LATEST",
            "x-fc-function-name": self.name,
            "x-fc-service-logproject": "",
            "x-fc-service-logstore": "",
            "x-fc-control-path": control_path,
        }


@dataclass(frozen=True)
class Delivery:
    """One `POST /invoke` of an asynchronous event to an instance, and how it ended."""

    instance: str
    request_id: str
    status: int  # 0: the connection failed
    fc_status: str | None
    succeeded: bool


@dataclass
class Deployed:
    """A function the stand-in runs: it returns `returns`, or fails with `raises=(errorType, message)`."""

    returns: bytes = b'{"ok": true}'
    raises: tuple[str, str] | None = None
    log: str = "FC Invoke Start\nFC Invoke End\n"
    qualifiers: frozenset[str] = frozenset({"LATEST"})
    runs: Callable[[bytes], object] | None = None
    """The function's code for asynchronous events (run in the background, retried while it raises)."""
    instances: tuple[str, ...] = ()
    """Base URLs of a web function's instances: asynchronous events are delivered to them as POST /invoke."""
    context: FunctionContext | None = None
    async_retries: int = ASYNC_RETRIES


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived: `path` raw (percent-encoded), `query` decoded, header names lower-case."""

    api: str  # "fc3", "fc2", "sts" or "unknown"
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    signature_error: str | None = None
    via_proxy: bool = False
    peer_port: int = 0  # the client's port: the same for requests sent over one kept-alive connection

    @property
    def signed_headers(self) -> set[str]:
        authorization = self.headers.get("authorization", "")
        if "SignedHeaders=" not in authorization:
            return set()
        return set(authorization.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";"))


@dataclass(frozen=True)
class Invocation:
    """An invocation the API accepted (the function ran, or was queued when asynchronous)."""

    api: str
    function: str
    service: str | None
    qualifier: str | None
    invocation_type: str
    log_type: str
    event: bytes
    request_id: str
    arrived: float = 0.0  # time.monotonic() when the API accepted it


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class FcStandIn:
    """The stand-in server on 127.0.0.1; a context manager."""

    def __init__(self, *, secrets: Mapping[str, str] | None = None, account_id: str = ACCOUNT_ID) -> None:
        from segflow_engine.verify import NonceCache

        self.secrets = dict(DEFAULT_SECRETS if secrets is None else secrets)
        self.account_id = account_id
        self.requests: list[Recorded] = []
        self.invocations: list[Invocation] = []
        self.errors: list[str] = []  # tracebacks of the stand-in's own failures: a test asserts it is empty
        self._functions: dict[tuple[str | None, str], Deployed] = {}
        self._refusals: list[_Answer] = []
        self._queue = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fc-async")
        self._queued: list[Future[None]] = []
        self.async_failures: list[str] = []  # events whose function still raised after FC's retries
        self.deliveries: list[Delivery] = []  # POST /invoke to a web function's instances, in order
        self._next_instance = 0
        self._nonces = NonceCache()
        self._lock = threading.Lock()
        self._server: LoopbackServer | None = None

    def __enter__(self) -> FcStandIn:
        self._server = LoopbackServer(_handler_class(self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.drain()
        self._queue.shutdown(wait=True)
        if self._server is not None:
            self._server.close()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the FC stand-in is not started (use it as a context manager)")
        return self._server.base_url

    def refuse(self, count: int, status: int, code: str, message: str = "scripted refusal") -> None:
        """Answer the next `count` well-signed FC 3.0 invocations with this error instead of running them."""
        with self._lock:
            self._refusals += [_fc3_error(status, code, message) for _ in range(count)]

    def drain(self, timeout: float = 60.0) -> None:
        """Wait until every accepted asynchronous event has been run (functions deployed with `runs=`)."""
        with self._lock:
            queued = list(self._queued)
        for future in queued:
            future.result(timeout=timeout)

    def deploy(self, name: str, *, service: str | None = None, **behaviour: Any) -> Deployed:
        """An FC 3.0 function, or with `service` a function of that FC 2.0 service."""
        deployed = Deployed(**behaviour)
        self._functions[(service, name)] = deployed
        return deployed

    # --- dispatch ---------------------------------------------------------------------------------

    def answer(
        self, method: str, target: str, headers: dict[str, str], body: bytes, peer_port: int = 0
    ) -> _Answer:
        via_proxy = target.startswith(("http://", "https://"))
        parts = urlsplit(target)
        path, query = parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))
        api = _api_of(path, headers)
        try:
            error = self._check_signature(api, method, path, query, headers, body)
        except SigningError as exc:
            error = exc
        record = Recorded(
            api, method, path, query, headers, body, error.code if error else None, via_proxy, peer_port
        )
        with self._lock:
            self.requests.append(record)
        if api == "fc3":
            return self._fc3(record, error)
        if api == "fc2":
            return self._fc2(record, error)
        if api == "sts":
            return self._sts(record, error)
        return _fc3_error(404, "PathNotSupported", f"'{method} {path}' is not supported")

    def _check_signature(
        self, api: str, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> SigningError | None:
        from segflow_engine.verify import verify_request

        if api == "fc2":
            return self._check_fc2_signature(method, unquote(path), headers)
        if api in ("fc3", "sts"):
            verify_request(method, path, query, headers, body, self.secrets.get, nonces=self._nonces)
        return None

    # --- FC 3.0 -----------------------------------------------------------------------------------

    def _fc3(self, record: Recorded, error: SigningError | None) -> _Answer:
        if error is not None:
            return _fc3_signing_error(error)
        refusal = _fc3_refusal(record)
        if refusal is not None:
            return refusal
        with self._lock:
            scripted = self._refusals.pop(0) if self._refusals else None
        if scripted is not None:
            return scripted
        match = FC3_PATH.match(record.path)
        assert match is not None
        name = unquote(match.group(1))
        return self._invoke("fc3", None, name, record.query.get("qualifier"), record)

    def _invoke(
        self, api: str, service: str | None, name: str, qualifier: str | None, record: Recorded
    ) -> _Answer:
        deployed = self._functions.get((service, name))
        if deployed is None:
            if api == "fc2":
                return _fc2_error(404, "FunctionNotFound", f"function '{name}' does not exist")
            return _fc3_error(404, "FunctionNotFound", "function not found")
        if qualifier and qualifier not in deployed.qualifiers:
            code = "VersionNotFound" if qualifier.isdigit() else "AliasNotFound"
            message = f"{'version' if qualifier.isdigit() else 'alias'} '{qualifier}' does not exist"
            return _fc2_error(404, code, message) if api == "fc2" else _fc3_error(404, code, message)
        request_id = new_request_id()
        invocation_type = record.headers.get("x-fc-invocation-type", "Sync")
        log_type = record.headers.get("x-fc-log-type", "None")
        limit = MAX_ASYNC_PAYLOAD if invocation_type == "Async" else MAX_SYNC_PAYLOAD
        if len(record.body) > limit:
            message = f"payload size exceeds maximum allowed size ({limit} bytes)"
            return (
                _fc2_error(400, "EntityTooLarge", message)
                if api == "fc2"
                else _fc3_error(400, "EntityTooLarge", message)
            )
        invocation = Invocation(
            api,
            name,
            service,
            qualifier,
            invocation_type,
            log_type,
            record.body,
            request_id,
            time.monotonic(),
        )
        with self._lock:
            self.invocations.append(invocation)
        headers = {"x-fc-request-id": request_id}
        if invocation_type == "Async":
            if deployed.runs is not None:
                future = self._queue.submit(self._run_async, deployed.runs, record.body)
            elif deployed.instances:
                future = self._queue.submit(self._deliver, deployed, name, record.body, request_id)
            else:
                return _Answer(202, b"", headers)
            with self._lock:
                self._queued.append(future)
            return _Answer(202, b"", headers)
        if log_type == "Tail":
            tail = deployed.log.encode()[-LOG_TAIL_LIMIT:]
            headers["x-fc-log-result"] = base64.b64encode(tail).decode()
        if deployed.raises is not None:
            error_type, message = deployed.raises
            headers["x-fc-error-type"] = "UnhandledInvocationError"
            document = {"errorMessage": message, "errorType": error_type, "stackTrace": []}
            return _Answer(200, json.dumps(document).encode(), headers)
        return _Answer(200, deployed.returns, headers)

    def _run_async(self, runs: Callable[[bytes], object], event: bytes) -> None:
        for _attempt in range(1 + ASYNC_RETRIES):
            try:
                runs(event)
                return
            except Exception:
                failure = traceback.format_exc()
        with self._lock:
            self.async_failures.append(failure)

    def _deliver(self, deployed: Deployed, name: str, event: bytes, request_id: str) -> None:
        context = deployed.context or FunctionContext(name, Credentials("STS.standin", "standin-secret"))
        headers = {
            **context.headers(request_id, "/invoke"),
            "Content-Type": "application/octet-stream",
            "x-fc-invocation-type": "Async",
        }
        for _attempt in range(1 + deployed.async_retries):
            with self._lock:
                instance = deployed.instances[self._next_instance % len(deployed.instances)]
                self._next_instance += 1
            delivery = _post_invoke(instance, headers, event, request_id)
            with self._lock:
                self.deliveries.append(delivery)
            if delivery.succeeded:
                return
        with self._lock:
            self.async_failures.append(
                f"{request_id}: not delivered after {1 + deployed.async_retries} tries"
            )

    # --- FC 2.0 -----------------------------------------------------------------------------------

    def _fc2(self, record: Recorded, error: SigningError | None) -> _Answer:
        if error is not None:
            status = 403 if error.code in ("SignatureNotMatch", "InvalidAccessKeyID") else 400
            return _fc2_error(status, error.code, error.message)
        match = FC2_PATH.match(unquote(record.path))
        assert match is not None
        service, _, qualifier = match.group(1).partition(".")
        invocation_type = record.headers.get("x-fc-invocation-type", "Sync")
        if record.method != "POST" or invocation_type not in ("Sync", "Async"):
            return _fc2_error(400, "InvalidArgument", "POST with x-fc-invocation-type Sync or Async")
        return self._invoke("fc2", service, match.group(2), qualifier or None, record)

    def _check_fc2_signature(
        self, method: str, unescaped_path: str, headers: dict[str, str]
    ) -> SigningError | None:
        authorization = headers.get("authorization", "")
        scheme, _, credential = authorization.partition(" ")
        access_key_id, _, signature = credential.partition(":")
        if scheme != "FC" or not access_key_id or not signature:
            return SigningError(
                "Authorization must be FC <AccessKeyId>:<Signature>", code="MissingRequiredHeader"
            )
        date = headers.get("date", "")
        try:
            sent = email.utils.parsedate_to_datetime(date)
        except (TypeError, ValueError):
            return SigningError(f"Date {date!r} is not an HTTP date", code="MissingRequiredHeader")
        if abs((datetime.now(timezone.utc) - sent).total_seconds()) > FC2_MAX_DATE_SKEW:
            return SigningError("the request is more than 15 minutes old", code="SignatureNotMatch")
        secret = self.secrets.get(access_key_id)
        if not secret:
            return SigningError(f"invalid access key ID '{access_key_id}'", code="InvalidAccessKeyID")
        fc_headers = sorted((k, v) for k, v in headers.items() if k.startswith("x-fc-"))
        canonical = "".join(f"{k}:{v}\n" for k, v in fc_headers)
        string_to_sign = "\n".join(
            [
                method,
                headers.get("content-md5", ""),
                headers.get("content-type", ""),
                date,
                canonical + unescaped_path,
            ]
        )
        expected = base64.b64encode(
            hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(expected, signature):
            return SigningError(
                "The request signature we calculated does not match", code="SignatureNotMatch"
            )
        return None

    # --- STS --------------------------------------------------------------------------------------

    def _sts(self, record: Recorded, error: SigningError | None) -> _Answer:
        if error is not None:
            return _rpc_error(error.http_status or 400, error.code, error.message)
        if record.headers.get("x-acs-version") != "2015-04-01" or record.method != "POST":
            return _rpc_error(400, "InvalidVersion", "GetCallerIdentity is POST, version 2015-04-01")
        document = {
            "IdentityType": "RAMUser",
            "AccountId": self.account_id,
            "RequestId": new_request_id(),
            "PrincipalId": "2887742443752100",
            "UserId": "2887742443752100",
            "Arn": f"acs:ram::{self.account_id}:user/segflow",
        }
        return _Answer(200, json.dumps(document).encode(), {"Content-Type": "application/json;charset=utf-8"})


def _post_invoke(instance: str, headers: Mapping[str, str], event: bytes, request_id: str) -> Delivery:
    import requests

    try:
        response = requests.post(
            f"{instance}/invoke", data=event, headers=dict(headers), timeout=ASYNC_TIMEOUT
        )
    except requests.RequestException:
        return Delivery(instance, request_id, 0, None, False)
    fc_status = response.headers.get("x-fc-status")
    succeeded = 200 <= response.status_code < 300 and fc_status != "404"
    return Delivery(instance, request_id, response.status_code, fc_status, succeeded)


def _api_of(path: str, headers: Mapping[str, str]) -> str:
    if FC3_PATH.match(path):
        return "fc3"
    if FC2_PATH.match(unquote(path)):
        return "fc2"
    if path == "/" and headers.get("x-acs-action") == "GetCallerIdentity":
        return "sts"
    return "unknown"


def _fc3_refusal(record: Recorded) -> _Answer | None:
    """What FC 3.0 refuses in an otherwise well-signed InvokeFunction request."""
    headers = record.headers
    if record.method != "POST":
        return _fc3_error(405, "MethodNotAllowed", f"{record.method} is not allowed")
    if set(record.query) - {"qualifier"}:
        return _fc3_error(400, "InvalidArgument", f"unknown query parameters {sorted(record.query)}")
    if headers.get("x-acs-action") != "InvokeFunction" or headers.get("x-acs-version") != "2023-03-30":
        return _fc3_error(
            400, "InvalidArgument", "x-acs-action/x-acs-version must be InvokeFunction/2023-03-30"
        )
    if headers.get("x-fc-invocation-type", "Sync") not in ("Sync", "Async"):
        return _fc3_error(400, "InvalidArgument", "x-fc-invocation-type must be Sync or Async")
    if headers.get("x-fc-log-type", "None") not in ("None", "Tail"):
        return _fc3_error(400, "InvalidArgument", "x-fc-log-type must be None or Tail")
    unsigned = {h for h in headers if h.startswith("x-fc-")} - record.signed_headers
    if unsigned:
        return _fc3_error(403, "SignatureNotMatch", f"headers sent but not signed: {sorted(unsigned)}")
    return None


def _fc3_signing_error(error: SigningError) -> _Answer:
    if error.code == "InvalidAccessKeyId.NotFound":
        return _fc3_error(403, "InvalidAccessKeyID", error.message)
    if error.code in ("MissingParameter", "IncompleteSignature"):
        return _fc3_error(400, "MissingRequiredHeader", error.message)
    return _fc3_error(403, "SignatureNotMatch", error.message)


def _fc3_error(status: int, code: str, message: str) -> _Answer:
    request_id = new_request_id()
    document = {"Code": code, "Message": message, "RequestId": request_id}
    return _Answer(status, json.dumps(document).encode(), {"x-fc-request-id": request_id})


def _fc2_error(status: int, code: str, message: str) -> _Answer:
    document = {"errorCode": code, "errorMessage": message}
    return _Answer(status, json.dumps(document).encode(), {"x-fc-request-id": new_request_id()})


def _rpc_error(status: int, code: str, message: str) -> _Answer:
    document = {"RequestId": new_request_id(), "HostId": "sts.aliyuncs.com", "Code": code, "Message": message}
    return _Answer(status, json.dumps(document).encode(), {"Content-Type": "application/json;charset=utf-8"})


def _handler_class(standin: FcStandIn) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                answer = standin.answer(self.command, self.path, headers, body, self.client_address[1])
            except Exception:  # the stand-in's own bug: answer 500 and keep it for the test to see
                standin.errors.append(traceback.format_exc())
                answer = _fc3_error(500, "StandInError", "the stand-in failed")
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

    return _Handler
