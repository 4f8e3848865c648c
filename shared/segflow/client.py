"""The vision API clients: imageseg/videoseg RPC calls (`VisionClient`) and PicWish (`PicWishClient`).

Every HTTP attempt is signed afresh (new nonce and timestamp, so a retry is never `SignatureNonceUsed`),
takes a token from the process-wide rate limiter, and is retried only when `segflow.retry` says so.
Nothing here logs a URL, a header or a body: v1 puts `Signature` and `SecurityToken` in the query, v3 and
PicWish put secrets in headers. Exception text holds the code, message, HTTP status and RequestId only.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

import requests

from segflow.errors import ApiConnectionError, ApiError, ConfigError, DeadlineError, InputValidationError
from segflow.ratelimit import DEFAULT_QPS, RateLimiter
from segflow.results import (
    AsyncJobResult,
    SegmentResult,
    async_job_result,
    data_of,
    error_from_document,
    parse_document,
    segment_result,
)
from segflow.retry import RetryPolicy
from segflow.signing import Credentials, percent_encode, sign_v1, sign_v3

if TYPE_CHECKING:
    from segflow.deadline import Deadline

logger = logging.getLogger("segflow.client")

USER_AGENT = "segflow/0.1 (+requests)"
DEADLINE_SAFETY_SECONDS = 1.0
SIGNATURE_VERSIONS = ("v3", "v1")
PICWISH_PATH = "/tasks/visual/segmentation"
_ALIBABA_SUFFIX = ".aliyuncs.com"
_DEFAULT_IMAGESEG = "https://imageseg.cn-shanghai.aliyuncs.com"
_DEFAULT_VIDEOSEG = "https://videoseg.cn-shanghai.aliyuncs.com"
_DEFAULT_PICWISH = "https://picwish.market.alicloudapi.com"


class _EndpointFields(NamedTuple):
    imageseg: str
    videoseg: str
    picwish: str


class Endpoints(_EndpointFields):
    """Full endpoint URLs (scheme included) of the three services; a local engine can stand in for all.

    An immutable NamedTuple, checked when built, rather than a dataclass: `dataclasses` would cost the
    client's cold start about 6 ms (it imports `inspect`).
    """

    __slots__ = ()

    def __new__(
        cls,
        imageseg: str = _DEFAULT_IMAGESEG,
        videoseg: str = _DEFAULT_VIDEOSEG,
        picwish: str = _DEFAULT_PICWISH,
    ) -> Endpoints:
        for name, url in (("imageseg", imageseg), ("videoseg", videoseg), ("picwish", picwish)):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"the {name} endpoint must be a full http(s) URL, got {url!r}")
        return super().__new__(cls, imageseg, videoseg, picwish)

    def is_alibaba(self) -> bool:
        """True when imageseg and videoseg are the real Alibaba Cloud services (hosts under .aliyuncs.com)."""
        return all(
            (urlsplit(url).hostname or "").endswith(_ALIBABA_SUFFIX) for url in (self.imageseg, self.videoseg)
        )

    def for_product(self, product: str) -> str:
        if product not in ("imageseg", "videoseg", "picwish"):
            raise ConfigError(f"no endpoint for product {product!r}")
        url: str = getattr(self, product)
        return url.rstrip("/")


CredentialsSource = Callable[[], Credentials] | Credentials


class _Answer(NamedTuple):
    """One HTTP answer, read fully (a NamedTuple: private and cheaper to define than a dataclass)."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class _Transport:
    """One HTTP attempt: a rate-limit token, the request, connection failures as `ApiConnectionError`."""

    def __init__(self, session: requests.Session | None, timeout: float) -> None:
        self._session = session
        self._session_lock = threading.Lock()
        self.timeout = timeout
        _hide_secrets_in_urllib3_logs()

    @property
    def session(self) -> requests.Session:
        with self._session_lock:
            if self._session is None:
                self._session = requests.Session()
            return self._session

    def send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        limiter: RateLimiter,
        what: str,
        deadline: Deadline | None = None,
    ) -> _Answer:
        host = urlsplit(url).netloc
        timeout = self.timeout
        if deadline is not None:
            # An answer that would come after the function's timeout is worth nothing: never wait past it.
            left = deadline.remaining() - DEADLINE_SAFETY_SECONDS
            if left <= 0:
                raise DeadlineError(f"{what}: not sent, the invocation is about to time out")
            timeout = min(timeout, left)
        limiter.acquire()
        started = time.monotonic()
        try:
            response = self.session.request(
                method,
                url,
                headers=dict(headers),
                data=body or None,
                timeout=timeout,
                allow_redirects=False,
            )
            content = response.content
        except requests.Timeout:
            # `from None`: the requests exception's text holds the URL, and a v1 URL holds the signature.
            raise ApiConnectionError(
                f"{what}: no answer from {host} within {timeout:g}s", code="ConnectionTimeout"
            ) from None
        except requests.RequestException as error:
            raise ApiConnectionError(
                f"{what}: connection to {host} failed ({type(error).__name__})", code="ConnectionError"
            ) from None
        logger.debug(
            "%s: HTTP %d from %s in %.0f ms",
            what,
            response.status_code,
            host,
            (time.monotonic() - started) * 1e3,
        )
        return _Answer(response.status_code, response.headers, content)


class VisionClient:
    """imageseg and videoseg over RPC, signed with v3 (default, as the official SDK 4.x) or v1."""

    def __init__(
        self,
        credentials: CredentialsSource,
        *,
        endpoints: Endpoints | None = None,
        signature_version: str = "v3",
        rate_limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        timeout: float = 30.0,
        v1_method: str = "POST",
    ) -> None:
        if signature_version not in SIGNATURE_VERSIONS:
            raise ConfigError(
                f"signature version must be one of {SIGNATURE_VERSIONS}, got {signature_version!r}"
            )
        if v1_method not in ("GET", "POST"):
            raise ConfigError(f"v1 requests are GET or POST, got {v1_method!r}")
        self._credentials: Callable[[], Credentials] = (
            (lambda: credentials) if isinstance(credentials, Credentials) else credentials
        )
        self.endpoints = endpoints or Endpoints()
        self.signature_version = signature_version
        self.v1_method = v1_method
        self.retry = retry or RetryPolicy()
        self._rate_limiter = rate_limiter
        self._transport = _Transport(session, timeout)

    def rate_limiter_for(self, product: str) -> RateLimiter:
        """The given limiter, else the process-wide one of the product (each product has its own quota)."""
        return self._rate_limiter or RateLimiter.shared(DEFAULT_QPS, key=product)

    def call(self, action: str, params: Mapping[str, str]) -> tuple[str, dict[str, Any]]:
        """Call any catalogued imageseg/videoseg action; returns (RequestId, Data)."""
        from segflow import catalogue  # on first use, not at import: the client's cold start stays light

        entry = catalogue.get_action(action)
        if entry.product == "picwish":
            raise ConfigError("PicWish is not an RPC action: use PicWishClient")
        return self._rpc(entry.product, entry.version, entry.name, params)

    def segment(self, action: str, url: str, params: Mapping[str, str] | None = None) -> SegmentResult:
        """Submit `url` to a segmentation action; async actions answer with `job_id` set (poll it)."""
        from segflow import catalogue  # on first use, not at import: the client's cold start stays light

        entry = catalogue.get_action(action)
        if entry.product == "picwish" or not entry.url_param:
            raise ConfigError(f"{action} is not an imageseg/videoseg segmentation action")
        extra = {name: _param_text(value) for name, value in (params or {}).items()}
        unknown = sorted(set(extra) - set(entry.all_params))
        if unknown:
            raise InputValidationError(
                f"{action} takes no parameter {', '.join(unknown)} (it takes {', '.join(entry.all_params)})",
                code="InvalidParameter",
            )
        missing = [name for name in entry.required_params if not extra.get(name)]
        if missing:
            raise InputValidationError(
                f"{action} needs {', '.join(missing)}", code="MissingParameter", http_status=400
            )
        query = {entry.url_param: url, **extra}
        request_id, data = self._rpc(entry.product, entry.version, entry.name, query)
        return segment_result(entry.name, request_id, data, is_async=catalogue.is_async_call(entry, query))

    def get_async_job_result(
        self, job_id: str, *, product: str = "videoseg", deadline: Deadline | None = None
    ) -> AsyncJobResult:
        """Poll a videoseg job (default) or an async SegmentBody job (`product="imageseg"`); with a
        `deadline`, no attempt (nor retry) waits past it (`DeadlineError`)."""
        request_id, data = self._rpc(
            product, _version_of(product), "GetAsyncJobResult", {"JobId": job_id}, deadline=deadline
        )
        return async_job_result(request_id, data, job_id=job_id)

    # --- one RPC ---------------------------------------------------------------------------------------

    def _rpc(
        self,
        product: str,
        version: str,
        action: str,
        params: Mapping[str, str],
        *,
        deadline: Deadline | None = None,
    ) -> tuple[str, dict[str, Any]]:
        endpoint = self.endpoints.for_product(product)
        query = {name: _param_text(value) for name, value in params.items()}
        limiter = self.rate_limiter_for(product)

        def attempt() -> tuple[str, dict[str, Any]]:
            method, url, headers = self._signed_request(endpoint, action, version, query)
            answer = self._transport.send(
                method, url, headers, b"", limiter=limiter, what=action, deadline=deadline
            )
            return _rpc_result(answer)

        return self.retry.run(attempt, what=f"{product} {action}", deadline=deadline)

    def _signed_request(
        self, endpoint: str, action: str, version: str, query: Mapping[str, str]
    ) -> tuple[str, str, dict[str, str]]:
        credentials = self._credentials()
        parts = urlsplit(endpoint)
        pathname = parts.path or "/"
        base = f"{parts.scheme}://{parts.netloc}{pathname}"
        if self.signature_version == "v3":
            # As alibabacloud-tea-openapi's do_request for style RPC: POST, parameters in the query,
            # Action/Version in x-acs-* headers, empty body. Format=JSON is explicit: the docs disagree on
            # the default.
            v3_query = {**query, "Format": "JSON"}
            signed3 = sign_v3(
                "POST",
                parts.netloc,
                action,
                version,
                v3_query,
                b"",
                credentials,
                headers={"user-agent": USER_AGENT},
                pathname=pathname,
            )
            return "POST", f"{base}?{_encode_query(v3_query)}", signed3.headers
        signed1 = sign_v1(
            self.v1_method, {"Action": action, "Version": version, "Format": "JSON", **query}, credentials
        )
        headers = {"accept": "application/json", "user-agent": USER_AGENT}
        return self.v1_method, f"{base}?{_encode_query(signed1.params)}", headers


def _param_text(value: object) -> str:
    # The API spells booleans in lower case (`Async=true`); str(True) would send "True".
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _version_of(product: str) -> str:
    from segflow import catalogue

    for action in catalogue.ACTIONS.values():
        if action.product == product and action.version:
            return action.version
    raise ConfigError(f"no API version known for product {product!r}")


def _encode_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))


def _rpc_result(answer: _Answer) -> tuple[str, dict[str, Any]]:
    """(RequestId, Data) of a success answer; `ApiError` with the answer's Code/RequestId/HostId otherwise."""
    try:
        document = parse_document(answer.body, answer.headers.get("content-type", ""))
    except (ValueError, SyntaxError):  # ElementTree.ParseError is a SyntaxError
        document = None
    if answer.status >= 400:
        if document is None:
            return _raise(error_from_document({"Message": "unreadable error answer"}, answer.status))
        return _raise(error_from_document(document, answer.status))
    if document is None or not 200 <= answer.status < 300:
        raise ApiError(
            f"unexpected answer (HTTP {answer.status}, {len(answer.body)} bytes)",
            code="InvalidResponse",
            http_status=answer.status,
        )
    if "Code" in document and "Data" not in document:
        raise error_from_document(document, answer.status)
    request_id = document.get("RequestId")
    if not isinstance(request_id, str) or not request_id:
        raise ApiError("the answer has no RequestId", code="InvalidResponse", http_status=answer.status)
    return request_id, data_of(document)


def _raise(error: ApiError) -> tuple[str, dict[str, Any]]:
    raise error


# --- PicWish ---------------------------------------------------------------------------------------------

# Seed 004: the HTTP (or JSON) status says whether the request was taken ...
PICWISH_STATUS_CODES: Mapping[int, str] = {
    400: "PicWish.InvalidParameter",
    401: "PicWish.Unauthorized",
    403: "PicWish.Forbidden",
    404: "PicWish.NotFound",
    413: "PicWish.TooLarge",
    429: "PicWish.Throttling",
    500: "PicWish.InternalError",
}
# ... and only data.state == 1 says the cutout worked.
PICWISH_STATE_CODES: Mapping[int, str] = {
    -8: "PicWish.Timeout",
    -7: "PicWish.InvalidImage",
    -5: "PicWish.TooLarge",
    -3: "PicWish.DownloadFailed",
    -2: "PicWish.UploadFailed",
    -1: "PicWish.Failed",
}
PICWISH_DONE = 1


class PicWishClient:
    """The PicWish cutout API on the Alibaba Cloud API Market (AppCode auth, 2 QPS by default)."""

    def __init__(
        self,
        appcode: str,
        *,
        endpoint: str = _DEFAULT_PICWISH,
        rate_limiter: RateLimiter | None = None,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        timeout: float = 40.0,  # the service itself gives up after 30 s (state -8)
        body_format: str = "form",
    ) -> None:
        if not appcode:
            raise ConfigError("PicWish needs an AppCode (SEGFLOW_PICWISH_APPCODE)")
        if body_format not in ("form", "json"):
            raise ConfigError(f"PicWish body format is form or json, got {body_format!r}")
        self._appcode = appcode
        self.endpoint = Endpoints(picwish=endpoint).for_product("picwish")
        self.body_format = body_format
        self.retry = retry or RetryPolicy()
        self.rate_limiter = rate_limiter or RateLimiter.shared(DEFAULT_QPS, key="picwish")
        self._transport = _Transport(session, timeout)

    def __repr__(self) -> str:
        return f"PicWishClient(endpoint={self.endpoint!r}, appcode=<hidden>)"

    def segment(
        self,
        image_url: str,
        *,
        type: str = "",
        output_type: int = 2,
        crop: int = 0,
        format: str = "png",
        bg_color: str | None = None,
    ) -> SegmentResult:
        """Cut out the subject of `image_url`; `SegmentResult.image_url` / `.mask_url` per `output_type`."""
        fields: dict[str, str | int] = {"image_url": image_url, "output_type": output_type, "crop": crop}
        if type:
            fields["type"] = type
        if format:
            fields["format"] = format
        if bg_color:
            fields["bg_color"] = bg_color
        if self.body_format == "json":
            body = json.dumps(fields).encode()
            content_type = "application/json; charset=UTF-8"
        else:
            body = "&".join(
                f"{percent_encode(k)}={percent_encode(str(v))}" for k, v in fields.items()
            ).encode()
            content_type = "application/x-www-form-urlencoded; charset=UTF-8"
        headers = {
            "Authorization": f"APPCODE {self._appcode}",
            "Content-Type": content_type,
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        url = f"{self.endpoint}{PICWISH_PATH}"

        def attempt() -> SegmentResult:
            answer = self._transport.send(
                "POST", url, headers, body, limiter=self.rate_limiter, what="PicWish"
            )
            return _picwish_result(answer)

        return self.retry.run(attempt, what="PicWish segmentation")


def _picwish_result(answer: _Answer) -> SegmentResult:
    request_id = answer.headers.get("x-ca-request-id", "")
    try:
        document = parse_document(answer.body, "application/json")
    except (ValueError, SyntaxError):
        document = {}
    status = answer.status
    json_status = document.get("status")
    if status < 400 and isinstance(json_status, int) and json_status >= 400:
        status = json_status
    data = document.get("data") if isinstance(document.get("data"), Mapping) else {}
    assert isinstance(data, Mapping)
    request_id = request_id or str(data.get("task_id") or "")
    message = str(document.get("message") or answer.headers.get("x-ca-error-message") or "")
    if status >= 400 or not 200 <= status < 300:
        code = PICWISH_STATUS_CODES.get(status) or (
            "PicWish.InternalError" if status >= 500 else "PicWish.Error"
        )
        raise ApiError(
            message or f"HTTP {status}", code=code, http_status=status, request_id=request_id or None
        )
    state = data.get("state")
    if state != PICWISH_DONE:
        code = (
            PICWISH_STATE_CODES.get(state, "PicWish.Unfinished")
            if isinstance(state, int)
            else "PicWish.Unfinished"
        )
        raise ApiError(
            f"cutout state {state}: {message or 'no message'}",
            code=code,
            http_status=status,
            request_id=request_id or None,
        )
    return SegmentResult(
        action="PicWish",
        request_id=request_id,
        image_url=str(data["image"]) if data.get("image") else None,
        mask_url=str(data["mask"]) if data.get("mask") else None,
        raw=dict(data),
    )


# --- keep secrets out of third-party logs ----------------------------------------------------------------

_URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager")
"""The urllib3 loggers that write request URLs (request lines, retries, redirects) at DEBUG."""
_filter_lock = threading.Lock()
_filter_installed = False


class _RedactQuerySecrets(logging.Filter):
    """urllib3 logs `"POST /?…&Signature=… HTTP/1.1" 200` at DEBUG, with an input URL percent-encoded
    inside `ImageURL` (`Signature%3D…`, `security-token%3D…`): mask every encoding of every secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        from segflow.logs import redact_known

        message = record.getMessage()
        redacted = redact_known(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def _hide_secrets_in_urllib3_logs() -> None:
    global _filter_installed
    with _filter_lock:
        if not _filter_installed:
            for name in _URLLIB3_LOGGERS:
                logging.getLogger(name).addFilter(_RedactQuerySecrets())
            _filter_installed = True
