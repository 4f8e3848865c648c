"""A scriptable stand-in for imageseg, videoseg and PicWish on 127.0.0.1, for functional tests.

    with FakeApi() as api:                                   # starts on a free loopback port
        api.queue("SegmentBody", Reply.error(429, "Throttling.User"), Reply.ok({"ImageURL": "http://x"}))
        client = VisionClient(TEST_CREDENTIALS, endpoints=api.endpoints())
        ...
        assert api.count("SegmentBody") == 2
        assert api.requests[0].params["ImageURL"] == "..."

Replies come, in order of precedence, from the per-action queue (`queue(action, ...)`, FIFO), the
any-action queue (`queue("*", ...)`), the handler callback (`set_handler(fn)`, may return None to fall
through) and finally a default success (`{"RequestId": <new>, "Data": {}}`).

Alibaba-style requests (anything not under `/tasks/`) are checked with `segflow_engine.verify.verify_request`
against `secrets` (AccessKeyId → secret; default `TEST_CREDENTIALS`); a bad signature is answered the way
the service does (400 `SignatureDoesNotMatch`, 404 `InvalidAccessKeyId.NotFound` …) and recorded with
`signature_error` set. Pass `verify=False` to accept anything. PicWish requests are checked against
`appcode` when one is given (401 otherwise).

Every request is recorded (`requests`, thread-safe copies) with its parsed parameters and arrival time;
`max_requests_in_window(1.0)` measures the rate the server saw. A handler that raises is answered with
500 `FakeApi.HandlerError` and kept in `handler_errors`, so a test can assert its handler never failed.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from segflow.signing import Credentials
from tests.support.loopback_http import LoopbackServer

TEST_CREDENTIALS = Credentials("test-access-key-id", "test-access-key-secret")
TEST_STS_CREDENTIALS = Credentials("STS.test-key-id", "test-sts-secret", "test-security-token")
DEFAULT_SECRETS: Mapping[str, str] = {
    TEST_CREDENTIALS.access_key_id: TEST_CREDENTIALS.access_key_secret,
    TEST_STS_CREDENTIALS.access_key_id: TEST_STS_CREDENTIALS.access_key_secret,
}
PICWISH_PREFIX = "/tasks/"


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `reset=True` drops the connection with a TCP RST instead of answering."""

    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False

    @staticmethod
    def json(document: Mapping[str, Any], status: int = 200, *, delay: float = 0.0) -> Reply:
        return Reply(
            status,
            json.dumps(document).encode(),
            {"Content-Type": "application/json;charset=utf-8"},
            delay,
        )

    @staticmethod
    def ok(
        data: Mapping[str, Any] | None = None, *, request_id: str | None = None, delay: float = 0.0
    ) -> Reply:
        """A success answer `{"RequestId", "Data"}`; `data=None` leaves Data out (async submissions)."""
        document: dict[str, Any] = {"RequestId": request_id or new_request_id()}
        if data is not None:
            document["Data"] = dict(data)
        return Reply.json(document, delay=delay)

    @staticmethod
    def error(
        status: int,
        code: str,
        message: str = "scripted error",
        *,
        request_id: str | None = None,
        host_id: str = "imageseg.cn-shanghai.aliyuncs.com",
        delay: float = 0.0,
    ) -> Reply:
        return Reply.json(
            {
                "RequestId": request_id or new_request_id(),
                "HostId": host_id,
                "Code": code,
                "Message": message,
            },
            status,
            delay=delay,
        )

    @staticmethod
    def xml(text: str, status: int = 200) -> Reply:
        return Reply(status, text.encode(), {"Content-Type": "text/xml;charset=utf-8"})

    @staticmethod
    def connection_reset() -> Reply:
        return Reply(reset=True)

    @staticmethod
    def picwish(
        state: int = 1,
        *,
        image: str | None = "https://picwish.example/result.png",
        mask: str | None = None,
        status: int = 200,
        message: str = "success",
        task_id: str | None = None,
        request_id: str | None = None,
    ) -> Reply:
        data: dict[str, Any] = {
            "state": state,
            "progress": 100 if state == 1 else 0,
            "task_id": task_id or uuid.uuid4().hex,
        }
        if image is not None and state == 1:
            data["image"] = image
        if mask is not None and state == 1:
            data["mask"] = mask
        reply = Reply.json({"status": status, "message": message, "data": data}, status)
        headers = dict(reply.headers)
        headers["X-Ca-Request-Id"] = request_id or new_request_id()
        return Reply(reply.status, reply.body, headers)


@dataclass(frozen=True)
class RecordedRequest:
    """What the fake saw. `params`: query + form/JSON body + `Action`/`Version` from x-acs headers."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    params: dict[str, str]
    arrived: float  # time.monotonic() on arrival
    signature_version: str | None = None  # "1.0" / "v3" when verified
    signature_error: str | None = None  # the SigningError code when refused

    @property
    def action(self) -> str:
        if self.path.startswith(PICWISH_PREFIX):
            return "PicWish"
        return self.params.get("Action", "")


Handler = Callable[[RecordedRequest], Reply | None]


class FakeApi:
    """The fake server. Use as a context manager, or `start()` / `stop()`."""

    def __init__(
        self,
        *,
        secrets: Mapping[str, str] | None = None,
        verify: bool = True,
        appcode: str | None = None,
        max_skew_seconds: float = 900,
    ) -> None:
        self.secrets = dict(DEFAULT_SECRETS if secrets is None else secrets)
        self.verify = verify
        self.appcode = appcode
        self.max_skew_seconds = max_skew_seconds
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Reply]] = defaultdict(deque)
        self._handler: Handler | None = None
        self._requests: list[RecordedRequest] = []
        self._server: LoopbackServer | None = None
        self._nonces: Any = None
        self.handler_errors: list[BaseException] = []  # exceptions raised by the handler callback

    # --- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeApi:
        if self._server is not None:
            return self
        from segflow_engine.verify import NonceCache

        self._nonces = NonceCache()
        self._server = LoopbackServer(_make_handler_class(self))
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeApi is not started")
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def endpoints(self) -> Any:
        """`segflow.client.Endpoints` with every service (openplatform too) pointing here."""
        from segflow.client import Endpoints

        return Endpoints(imageseg=self.url, videoseg=self.url, picwish=self.url, openplatform=self.url)

    # --- scripting -------------------------------------------------------------------------------------

    def queue(self, action: str, *replies: Reply) -> None:
        """Answer the next calls of `action` ("PicWish" for the cutout, "*" for any) with `replies`."""
        with self._lock:
            self._queues[action].extend(replies)

    def set_handler(self, handler: Handler | None) -> None:
        """Decide replies in code (after the queues); return None to fall through to the default."""
        with self._lock:
            self._handler = handler

    def pending(self, action: str = "*") -> int:
        with self._lock:
            return len(self._queues[action])

    # --- observations ----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, action: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.action == action]

    def count(self, action: str | None = None) -> int:
        return len(self.requests if action is None else self.requests_for(action))

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()

    def max_requests_in_window(self, seconds: float = 1.0, action: str | None = None) -> int:
        """The most requests that arrived within any half-open window of `seconds`."""
        times = sorted(r.arrived for r in (self.requests if action is None else self.requests_for(action)))
        best = 0
        start = 0
        for end, arrived in enumerate(times):
            while arrived - times[start] >= seconds:
                start += 1
            best = max(best, end - start + 1)
        return best

    def requests_per_second(self, action: str | None = None) -> float:
        """Average arrival rate between the first and the last request (0 with fewer than two)."""
        times = sorted(r.arrived for r in (self.requests if action is None else self.requests_for(action)))
        if len(times) < 2 or times[-1] == times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    # --- request handling (server threads) -------------------------------------------------------------

    def _answer(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Reply:
        arrived = time.monotonic()
        parts = urlsplit(raw_path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        path = parts.path or "/"
        params = {**query, **_body_params(headers, body)}
        if headers.get("x-acs-action"):
            params.setdefault("Action", headers["x-acs-action"])
        if headers.get("x-acs-version"):
            params.setdefault("Version", headers["x-acs-version"])
        signature_version, refusal = None, None
        early: Reply | None = None
        if path.startswith(PICWISH_PREFIX):
            if self.appcode is not None and headers.get("authorization") != f"APPCODE {self.appcode}":
                refusal = "Unauthorized"
                early = Reply.json({"status": 401, "message": "Invalid AppCode"}, 401)
        elif self.verify:
            signature_version, refusal, early = self._check_signature(method, path, query, headers, body)
        record = RecordedRequest(
            method, path, query, headers, body, params, arrived, signature_version, refusal
        )
        with self._lock:
            self._requests.append(record)
        if early is not None:
            return early
        return self._scripted(record)

    def _check_signature(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[str | None, str | None, Reply | None]:
        from segflow.errors import SigningError
        from segflow_engine.verify import verify_request

        try:
            verified = verify_request(
                method,
                path,
                query,
                headers,
                body,
                self.secrets.get,
                nonces=self._nonces,
                max_skew_seconds=self.max_skew_seconds,
            )
        except SigningError as error:
            status = error.http_status or 400
            return None, error.code, Reply.error(status, error.code, error.message)
        return verified.signature_version, None, None

    def _scripted(self, record: RecordedRequest) -> Reply:
        with self._lock:
            for key in (record.action, "*"):
                if self._queues[key]:
                    return self._queues[key].popleft()
            handler = self._handler
        if handler is not None:
            try:
                reply = handler(record)
            except Exception as error:
                # Answer instead of dropping the connection: a dropped one looks like a network fault
                # the client would retry, hiding the bug in the test's handler.
                with self._lock:
                    self.handler_errors.append(error)
                return Reply.error(500, "FakeApi.HandlerError", f"{type(error).__name__}: {error}")
            if reply is not None:
                return reply
        if record.action == "PicWish":
            return Reply.picwish()
        return Reply.ok({})


def _body_params(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not body:
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    if content_type == "application/x-www-form-urlencoded":
        return dict(parse_qsl(text, keep_blank_values=True))
    if content_type == "application/json":
        try:
            document = json.loads(text)
        except ValueError:
            return {}
        if isinstance(document, dict):
            return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in document.items()}
    return {}


def _make_handler_class(api: FakeApi) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 10  # idle keep-alive connections are closed after this

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the tests read `api.requests`; stderr noise helps nobody

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = api._answer(self.command, self.path, headers, body)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.reset:
                # SO_LINGER 0: close() sends RST, which the client sees as "connection reset by peer".
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

    return _Handler
