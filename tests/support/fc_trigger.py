"""A loopback stand-in for a Function Compute HTTP trigger with `authType: function`, in front of instances.

    with FcHttpTrigger(["http://127.0.0.1:9001", "http://127.0.0.1:9002"], keys={ak: secret},
                       context=FunctionContext("segflow-engine", role_credentials)) as trigger:
        ...  # call trigger.base_url as the trigger's URL; trigger.forwarded says which instance got what

What it checks and does, each from FC's documents (fc-engine.md §1 and §5 give the addresses):

- "Configure signature authentication for HTTP triggers": the request carries `authorization:
  ACS3-HMAC-SHA256 Credential=<AccessKeyId>,SignedHeaders=<names>,Signature=<hex>` and `x-acs-date`; the
  gateway recomputes it the way the page's Python example does: `alibabacloud_openapi_util`'s
  `get_authorization` over the method, the path as sent with `$` as `%24`, the query (one value per name),
  the signed headers (the example signs `x-acs-date` and `x-acs-security-token`) and an empty payload.
  Refusals (texts from that page's FAQ and FC's "Error codes"): no signature → 400 MissingRequiredHeader
  "required HTTP header Date was not specified"; an unknown key → 403 InvalidAccessKeyID; a wrong signature
  or an STS key with another token → 403 SignatureNotMatch "The request signature we calculated does not
  match …"; `x-acs-date` more than 15 minutes off → 403 with "the difference between the request time and
  the current time is too large" (the tolerance is not documented for triggers: 15 minutes is FC's API
  rule). Refused requests never reach an instance.
- "Web functions" (request limits): request headers may not start with `x-fc-`, headers ≤ 8 KB, path and
  query ≤ 4 KB, body ≤ 32 MB for a synchronous call; beyond → 400 InvalidArgument.
- "Context and log format" / "Event handlers": the request reaches an instance as sent (method, path, query,
  headers, body), plus the context headers and `x-fc-control-path: /http-invoke`
  (`FunctionContext.headers`). The answer goes back without the headers a function may not set (`x-fc-*`,
  `connection`, `content-length`, `date`, `keep-alive`, `server`), with FC's `x-fc-request-id`; an
  `x-fc-status` of the instance is kept in `forwarded` (FC records the call as failed on 404).
- Requests are spread over the instances (the least busy, in turn); an instance that refuses connections
  is left out until `revive()`.
"""

from __future__ import annotations

import http.client
import json
import threading
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support.fake_api import new_request_id
from tests.support.fc_standin import FunctionContext
from tests.support.loopback_http import LoopbackServer
from tests.support.signing_cases import TeaRequest

MAX_HEADER_BYTES = 8 * 1024
MAX_TARGET_BYTES = 4 * 1024
MAX_SYNC_BODY = 32 * 1024 * 1024
MAX_SKEW_SECONDS = 15 * 60
FORBIDDEN_RESPONSE_HEADERS = frozenset({"connection", "content-length", "date", "keep-alive", "server"})
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"})
INSTANCE_TIMEOUT = 600.0
NOT_SIGNED = "required HTTP header Date was not specified"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your access key "
    "and signing method"
)
STALE = "the difference between the request time and the current time is too large"


class Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Forwarded:
    """One request an instance answered."""

    instance: str
    method: str
    target: str
    headers: dict[str, str]
    status: int
    fc_status: str | None


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class FcHttpTrigger(LoopbackServer):
    """The trigger on 127.0.0.1; a context manager."""

    def __init__(
        self,
        instances: Sequence[str],
        *,
        keys: Mapping[str, str | tuple[str, str]],
        context: FunctionContext,
    ) -> None:
        self.instances = list(instances)
        self.keys = {k: (v, None) if isinstance(v, str) else v for k, v in keys.items()}
        self.context = context
        self.forwarded: list[Forwarded] = []
        self.refused: list[tuple[int, str]] = []
        self.errors: list[str] = []  # the stand-in's own failures: a test asserts it stays empty
        self._down: set[str] = set()
        self._busy = dict.fromkeys(self.instances, 0)
        self._turn = 0
        self._lock = threading.Lock()
        super().__init__(_handler(self))

    def revive(self, instance: str) -> None:
        with self._lock:
            self._down.discard(instance)

    # -- one request -----------------------------------------------------------------------------------
    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Answer:
        request_id = new_request_id()
        try:
            check_limits(target, headers, body)
            self.verify(method, target, headers)
        except Refused as refusal:
            with self._lock:
                self.refused.append((refusal.status, refusal.code))
            return _error(refusal.status, refusal.code, refusal.message, request_id)
        return self._forward(method, target, headers, body, request_id)

    def verify(self, method: str, target: str, headers: Mapping[str, str]) -> None:
        """The gateway's check, as the official example signs (module docstring)."""
        authorization = headers.get("authorization", "")
        if not authorization or "x-acs-date" not in headers:
            raise Refused(400, "MissingRequiredHeader", NOT_SIGNED)
        algorithm, _, fields_text = authorization.partition(" ")
        fields = dict(part.split("=", 1) for part in fields_text.split(",") if "=" in part)
        access_key_id = fields.get("Credential", "")
        known = self.keys.get(access_key_id)
        if algorithm != "ACS3-HMAC-SHA256" or not fields.get("Signature"):
            raise Refused(403, "SignatureNotMatch", MISMATCH)
        if known is None:
            raise Refused(403, "InvalidAccessKeyID", f"invalid access key ID '{access_key_id}'")
        secret, token = known
        if token is not None and headers.get("x-acs-security-token") != token:
            raise Refused(403, "SignatureNotMatch", MISMATCH)
        _check_date(headers["x-acs-date"])
        signed = [name for name in fields.get("SignedHeaders", "").split(";") if name]
        if "x-acs-date" not in signed or any(name not in headers for name in signed):
            raise Refused(403, "SignatureNotMatch", MISMATCH)
        expected = official_authorization(
            method, target, {n: headers[n] for n in signed}, access_key_id, secret
        )
        if expected != authorization:
            raise Refused(403, "SignatureNotMatch", MISMATCH)

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes, request_id: str
    ) -> _Answer:
        sent = {k: v for k, v in headers.items() if k not in HOP_BY_HOP}
        sent.update(self.context.headers(request_id, "/http-invoke"))
        while (instance := self._pick()) is not None:
            try:
                status, answer_headers, answer_body = _send(instance, method, target, sent, body)
            except OSError:
                with self._lock:
                    self._down.add(instance)
                    self._busy[instance] -= 1
                continue
            with self._lock:
                self._busy[instance] -= 1
                fc_status = answer_headers.get("x-fc-status")
                self.forwarded.append(Forwarded(instance, method, target, sent, status, fc_status))
            kept = {
                k: v
                for k, v in answer_headers.items()
                if not k.startswith("x-fc-") and k not in FORBIDDEN_RESPONSE_HEADERS
            }
            return _Answer(status, answer_body, {**kept, "x-fc-request-id": request_id})
        return _error(503, "ResourceThrottled", "no instance of the function is running", request_id)

    def _pick(self) -> str | None:
        with self._lock:
            alive = [i for i in self.instances if i not in self._down]
            if not alive:
                return None
            self._turn += 1
            order = alive[self._turn % len(alive) :] + alive[: self._turn % len(alive)]
            chosen = min(order, key=lambda i: self._busy[i])
            self._busy[chosen] += 1
            return chosen


def official_authorization(
    method: str, target: str, signed_headers: Mapping[str, str], access_key_id: str, secret: str
) -> str:
    """FC's example: `get_authorization` of the request as it arrived (path with `$` as `%24`)."""
    from alibabacloud_openapi_util.client import Client as OpenApiUtil

    parts = urlsplit(target)
    request = TeaRequest(
        method=method,
        pathname=parts.path.replace("$", "%24"),
        query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
        headers=dict(signed_headers),
    )
    authorization: str = OpenApiUtil.get_authorization(request, "ACS3-HMAC-SHA256", "", access_key_id, secret)
    return authorization


def check_limits(target: str, headers: Mapping[str, str], body: bytes) -> None:
    if any(name.startswith("x-fc-") for name in headers):
        raise Refused(400, "InvalidArgument", "request headers must not start with x-fc-")
    if sum(len(k) + len(v) for k, v in headers.items()) > MAX_HEADER_BYTES:
        raise Refused(400, "InvalidArgument", "the request headers exceed 8 KB")
    if len(target.encode()) > MAX_TARGET_BYTES:
        raise Refused(400, "InvalidArgument", "the path and query exceed 4 KB")
    if len(body) > MAX_SYNC_BODY:
        raise Refused(400, "InvalidArgument", f"the body exceeds {MAX_SYNC_BODY} bytes")


def _check_date(value: str) -> None:
    try:
        sent = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError as exc:
        raise Refused(403, "SignatureNotMatch", MISMATCH) from exc
    if abs((datetime.now(timezone.utc) - sent).total_seconds()) > MAX_SKEW_SECONDS:
        raise Refused(403, "SignatureNotMatch", STALE)


def _send(
    instance: str, method: str, target: str, headers: Mapping[str, str], body: bytes
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(instance)
    connection = http.client.HTTPConnection(
        parts.hostname or "127.0.0.1", parts.port, timeout=INSTANCE_TIMEOUT
    )
    try:
        connection.request(method, target, body=body or None, headers=dict(headers))
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def _error(status: int, code: str, message: str, request_id: str) -> _Answer:
    document = {"Code": code, "Message": message, "RequestId": request_id}
    return _Answer(
        status,
        json.dumps(document).encode(),
        {"Content-Type": "application/json", "x-fc-request-id": request_id},
    )


def _handler(trigger: FcHttpTrigger) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            try:
                answer = trigger.answer(self.command, self.path, headers, body)
            except Exception:  # the stand-in's own bug: answer 500 and keep it for the test to see
                trigger.errors.append(traceback.format_exc())
                answer = _error(500, "StandInError", "the stand-in failed", new_request_id())
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _serve

    return Handler
