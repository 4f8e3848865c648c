"""Function Compute 3.0 `InvokeFunction` and STS `GetCallerIdentity`, on requests and our own signing.

FC 3.0 has no services: a function is `/2023-03-30/functions/{name}/invocations` on the account's endpoint
(FC docs: API reference 2023-03-30, InvokeFunction; Endpoints). Both calls are signed ACS3-HMAC-SHA256 with
every header sent, as the official Tea SDK signs them (`segflow.signing.sign_v3`), so no SDK is needed at
run time. Errors are `CloudApiError`; nothing here logs or repeats a header, a signature or a secret.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import requests

from segflow.errors import ConfigError, SegflowError
from segflow.retry import is_retryable
from segflow.signing import Credentials, percent_encode, sign_v3

FC_API_VERSION = "2023-03-30"
STS_API_VERSION = "2015-04-01"
FC_ENDPOINT_TEMPLATE = "https://{account_id}.{region}.fc.aliyuncs.com"
"""FC docs, Endpoints: the public endpoint of an account in a region."""
DEFAULT_STS_ENDPOINT = "https://sts.aliyuncs.com"
USER_AGENT = "segflow/0.1 (+requests)"
DEFAULT_TIMEOUT = (10.0, 900.0)
"""(connect, read) seconds. A synchronous invocation holds the connection until the function returns,
so the read timeout must outlast the function's own timeout (segflow's are 300 s and 120 s)."""
_ERROR_SNIPPET = 200
_ACCOUNT_ID = re.compile(r"^[0-9]{1,32}$")
_REGION = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


class CloudApiError(SegflowError):
    """FC 3.0 or STS refused the call (its Code, HTTP status and RequestId), or could not be reached."""

    default_code = "UnknownError"

    @property
    def retryable(self) -> bool:
        """Worth sending again, by `segflow.retry`'s table (throttling, 5xx, broken connections)."""
        return is_retryable(self.code, self.http_status)


class InvokeResult(NamedTuple):
    """What FC answered to an invocation the API accepted.

    `error_type` is the `x-fc-error-type` header: set when the function itself failed (FC docs, Python
    error handling: `UnhandledInvocationError`, with the error JSON as body, even on HTTP 200).
    An asynchronous invocation answers 202 with an empty body and its request id.
    """

    status: int
    request_id: str | None
    body: bytes
    log_tail: str | None
    error_type: str | None

    @property
    def function_failed(self) -> bool:
        return bool(self.error_type)


def fc_endpoint(template: str, *, region: str, account_id: str | None = None) -> str:
    """The FC endpoint URL from a template with `{account_id}` and `{region}` (https unless a scheme given).

    A malformed account id or region is a `ConfigError` (they become part of a host name), not an API error.
    """
    if not _REGION.match(region):
        raise ConfigError(f"region {region!r} is not a region id such as cn-shanghai")
    url = template.strip().replace("{region}", region)
    if "{account_id}" in url:
        if not account_id or not _ACCOUNT_ID.match(account_id):
            raise ConfigError(f"account id {account_id!r} is not an Alibaba Cloud account id (digits only)")
        url = url.replace("{account_id}", account_id)
    return normalize_endpoint(url)


def normalize_endpoint(url: str) -> str:
    """`host[:port]` or a URL -> `scheme://host[:port]` (https by default), no path, no trailing slash."""
    text = url.strip()
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ConfigError(f"endpoint {url!r} must be scheme://host[:port] with no path")
    return f"{parts.scheme}://{parts.netloc}"


class FcRequest(NamedTuple):
    """Path, query and FC headers of an InvokeFunction call, before signing."""

    pathname: str
    query: dict[str, str]
    headers: dict[str, str]


def invoke_request(
    function: str, *, qualifier: str | None = None, asynchronous: bool = False, log_tail: bool = False
) -> FcRequest:
    """InvokeFunction as the official SDK (alibabacloud-fc20230330) builds it: the name percent-encoded
    in the path, `qualifier` in the query, the event as an `application/octet-stream` body."""
    return FcRequest(
        pathname=f"/{FC_API_VERSION}/functions/{percent_encode(function)}/invocations",
        query={"qualifier": qualifier} if qualifier else {},
        headers={
            "content-type": "application/octet-stream",
            "x-fc-invocation-type": "Async" if asynchronous else "Sync",
            "x-fc-log-type": "Tail" if log_tail else "None",
        },
    )


class FcClient:
    """Invokes FC 3.0 functions of one account and region (`endpoint` from `fc_endpoint`), on one
    `requests.Session`, so a batch of asynchronous invocations reuses its connections. A session is not
    documented as thread-safe: give each worker thread its own client."""

    def __init__(
        self,
        credentials: Credentials,
        endpoint: str,
        *,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.endpoint = normalize_endpoint(endpoint)
        self._credentials = credentials
        self._session = session or requests.Session()
        self._owns_session = session is None
        self._timeout = timeout

    def __repr__(self) -> str:
        return f"FcClient(endpoint={self.endpoint!r})"

    def __enter__(self) -> FcClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    def invoke(
        self,
        function: str,
        payload: bytes = b"",
        *,
        qualifier: str | None = None,
        asynchronous: bool = False,
        log_tail: bool = False,
    ) -> InvokeResult:
        """`InvokeFunction`: the event bytes as body; `qualifier` (version or alias) in the query.

        `log_tail` asks for the last 4 KB of the function's log (`x-fc-log-type: Tail`), which FC only
        returns for synchronous invocations. Raises `CloudApiError` when the API refuses the call.
        """
        request = invoke_request(function, qualifier=qualifier, asynchronous=asynchronous, log_tail=log_tail)
        response = send_signed(
            self._session,
            self.endpoint,
            self._credentials,
            action="InvokeFunction",
            version=FC_API_VERSION,
            pathname=request.pathname,
            query=request.query,
            body=payload,
            headers=request.headers,
            timeout=self._timeout,
        )
        if not 200 <= response.status_code < 300:
            raise error_from_response(response)
        return InvokeResult(
            status=response.status_code,
            request_id=response.headers.get("x-fc-request-id"),
            body=response.content,
            log_tail=decode_log_tail(response.headers.get("x-fc-log-result")),
            error_type=response.headers.get("x-fc-error-type") or None,
        )


def send_signed(
    session: requests.Session,
    endpoint: str,
    credentials: Credentials,
    *,
    action: str,
    version: str,
    pathname: str,
    query: Mapping[str, str],
    body: bytes,
    headers: Mapping[str, str],
    timeout: float | tuple[float, float],
) -> requests.Response:
    """One ACS3-signed request; the query is encoded here exactly as it was signed."""
    host = urlsplit(endpoint).netloc
    signed = sign_v3(
        "POST",
        host,
        action,
        version,
        query,
        body,
        credentials,
        headers={"user-agent": USER_AGENT, **headers},
        pathname=pathname,
    )
    encoded = "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(query.items()))
    url = f"{endpoint}{pathname}" + (f"?{encoded}" if encoded else "")
    try:
        return session.post(url, data=body, headers=signed.headers, timeout=timeout, allow_redirects=False)
    except requests.Timeout as exc:
        raise CloudApiError(f"{action}: no answer from {host} in time", code="ConnectionTimeout") from exc
    except requests.RequestException as exc:
        raise CloudApiError(
            f"{action}: cannot reach {host} ({type(exc).__name__})", code="ConnectionError"
        ) from exc


def decode_log_tail(header: str | None) -> str | None:
    """`x-fc-log-result` is the log tail in base64 (FC docs, InvokeFunction: X-Fc-Log-Result)."""
    if not header:
        return None
    try:
        return base64.b64decode(header, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return header


def error_from_response(response: requests.Response) -> CloudApiError:
    """The API's error JSON (`Code`, `Message`, `RequestId`; FC docs 2023-03-30 data type Error), else a
    generic error naming the HTTP status; the request id falls back to the `x-fc-request-id` header."""
    document = _json_object(response.content)
    code = _text(document, "Code", "code", "ErrorCode", "errorCode")
    message = _text(document, "Message", "message", "ErrorMessage", "errorMessage")
    if not message:
        snippet = response.content[:_ERROR_SNIPPET].decode("utf-8", "replace").strip()
        message = snippet or f"HTTP {response.status_code} without a body"
    request_id = _text(document, "RequestId", "requestId") or response.headers.get("x-fc-request-id")
    return CloudApiError(
        message,
        code=code or None,
        http_status=response.status_code,
        request_id=request_id or None,
        host_id=_text(document, "HostId") or None,
    )


def caller_account_id(
    credentials: Credentials,
    *,
    endpoint: str = DEFAULT_STS_ENDPOINT,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = (10.0, 30.0),
) -> str:
    """The account id the AccessKey belongs to: STS `GetCallerIdentity` (RPC 2015-04-01, POST /, no
    parameters; any key may call it — STS docs, GetCallerIdentity). Raises `CloudApiError`."""
    own = session is None
    http = session or requests.Session()
    try:
        response = send_signed(
            http,
            normalize_endpoint(endpoint),
            credentials,
            action="GetCallerIdentity",
            version=STS_API_VERSION,
            pathname="/",
            query={},
            body=b"",
            headers={},
            timeout=timeout,
        )
    finally:
        if own:
            http.close()
    if response.status_code != 200:
        raise error_from_response(response)
    document = _json_object(response.content)
    account_id = _text(document, "AccountId")
    if not _ACCOUNT_ID.match(account_id):
        raise CloudApiError(
            "GetCallerIdentity answered without an AccountId",
            code="InvalidResponse",
            http_status=response.status_code,
            request_id=_text(document, "RequestId") or None,
        )
    return account_id


def _json_object(content: bytes) -> dict[str, Any]:
    try:
        document = json.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def _text(document: Mapping[str, Any], *names: str) -> str:
    for name in names:
        value = document.get(name)
        if isinstance(value, (str, int)) and str(value):
            return str(value)
    return ""
