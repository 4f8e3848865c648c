"""The vision API clients: imageseg/videoseg RPC calls (`VisionClient`) and PicWish (`PicWishClient`).

Every HTTP attempt (`segflow.transport`) is signed afresh (new nonce and timestamp, so a retry is never
`SignatureNonceUsed`), takes a token from the process-wide rate limiter, and is retried only when
`segflow.retry` says so. Nothing here logs a URL, a header or a body: v1 puts `Signature` and
`SecurityToken` in the query, v3 and PicWish put secrets in headers. Exception text holds the code,
message, HTTP status and RequestId only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from segflow.errors import ApiError, ConfigError, InputValidationError
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
from segflow.settings import (
    DEFAULT_IMAGESEG_ENDPOINT,
    DEFAULT_OPENPLATFORM_ENDPOINT,
    DEFAULT_PICWISH_ENDPOINT,
    DEFAULT_VIDEOSEG_ENDPOINT,
    SIGNATURE_VERSIONS,
)
from segflow.signing import Credentials, percent_encode, sign_fc_trigger, sign_v1, sign_v3
from segflow.transport import USER_AGENT, Answer, HttpTransport
from segflow.values import Value

if TYPE_CHECKING:
    import requests

    from segflow.deadline import Deadline

PICWISH_PATH = "/tasks/visual/segmentation"
_ALIBABA_SUFFIX = ".aliyuncs.com"
OPENPLATFORM_VERSION = "2019-12-19"
_PRODUCTS = ("imageseg", "videoseg", "picwish", "openplatform")


class Endpoints(Value):
    """Full endpoint URLs (scheme included) of the services (openplatform: `AuthorizeFileUpload`); a local
    engine can stand in for all. Checked when built."""

    imageseg: str
    videoseg: str
    picwish: str
    openplatform: str

    def __init__(
        self,
        imageseg: str = DEFAULT_IMAGESEG_ENDPOINT,
        videoseg: str = DEFAULT_VIDEOSEG_ENDPOINT,
        picwish: str = DEFAULT_PICWISH_ENDPOINT,
        openplatform: str = DEFAULT_OPENPLATFORM_ENDPOINT,
    ) -> None:
        for name, url in zip(_PRODUCTS, (imageseg, videoseg, picwish, openplatform), strict=True):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"the {name} endpoint must be a full http(s) URL, got {url!r}")
        super().__init__(imageseg, videoseg, picwish, openplatform)

    def is_alibaba(self) -> bool:
        """True when imageseg and videoseg are the real Alibaba Cloud services (hosts under .aliyuncs.com)."""
        return all(
            (urlsplit(url).hostname or "").endswith(_ALIBABA_SUFFIX) for url in (self.imageseg, self.videoseg)
        )

    def for_product(self, product: str) -> str:
        if product not in _PRODUCTS:
            raise ConfigError(f"no endpoint for product {product!r}")
        url: str = getattr(self, product)
        return url.rstrip("/")


CredentialsSource = Callable[[], Credentials] | Credentials


class VisionClient:
    """imageseg and videoseg over RPC, signed with v3 (default, as the official SDK 4.x) or v1; or, for the
    engine deployed on Function Compute behind an HTTP trigger with `authType: function`, `fc-trigger`
    (the same requests as v3, signed as FC's gateway checks: `segflow.signing.sign_fc_trigger`)."""

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
        upload_rate_limiter: RateLimiter | None = None,
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
        self._upload_rate_limiter = upload_rate_limiter
        self._transport = HttpTransport(session, timeout)

    @property
    def transport(self) -> HttpTransport:
        """The HTTP sender; the form POST of an input to the temporary bucket uses it too."""
        return self._transport

    def rate_limiter_for(self, product: str) -> RateLimiter:
        """The given limiter, else the process-wide one of the product (each product has its own quota).
        `AuthorizeFileUpload` (openplatform) never takes a token of the vision APIs' quota."""
        if product == "openplatform":
            return self._upload_rate_limiter or RateLimiter.shared(DEFAULT_QPS, key=product)
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

    def authorize_file_upload(self, product: str, region_id: str) -> dict[str, Any]:
        """`AuthorizeFileUpload` (openplatform 2019-12-19) for `product`: the answer document, whose Bucket,
        Endpoint, ObjectKey, AccessKeyId, EncodedPolicy and Signature allow one form POST of a file to the
        service's temporary bucket (`segflow.tempupload`). A GET with `Product` and `RegionId` in the query,
        as the official SDK's `*_advance` methods send it."""
        query = {"Product": product, "RegionId": region_id}
        return self._rpc_call(
            "openplatform", OPENPLATFORM_VERSION, "AuthorizeFileUpload", query, http_method="GET"
        )

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
        document = self._rpc_call(product, version, action, params, deadline=deadline)
        return str(document["RequestId"]), data_of(document)

    def _rpc_call(
        self,
        product: str,
        version: str,
        action: str,
        params: Mapping[str, str],
        *,
        deadline: Deadline | None = None,
        http_method: str | None = None,
    ) -> dict[str, Any]:
        """One RPC call, retried: the whole document of a success answer (it has a RequestId)."""
        endpoint = self.endpoints.for_product(product)
        query = {name: _param_text(value) for name, value in params.items()}
        limiter = self.rate_limiter_for(product)

        def attempt() -> dict[str, Any]:
            method, url, headers = self._signed_request(endpoint, action, version, query, http_method)
            answer = self._transport.send(
                method, url, headers, b"", limiter=limiter, what=action, deadline=deadline
            )
            return _rpc_document(answer)

        return self.retry.run(attempt, what=f"{product} {action}", deadline=deadline)

    def _signed_request(
        self,
        endpoint: str,
        action: str,
        version: str,
        query: Mapping[str, str],
        http_method: str | None = None,
    ) -> tuple[str, str, dict[str, str]]:
        parts = urlsplit(endpoint)
        pathname = parts.path or "/"
        base = f"{parts.scheme}://{parts.netloc}{pathname}"
        if self.signature_version != "v1":
            return self._v3_request(parts.netloc, base, pathname, action, version, query, http_method)
        method = http_method or self.v1_method
        signed1 = sign_v1(
            method, {"Action": action, "Version": version, "Format": "JSON", **query}, self._credentials()
        )
        headers = {"accept": "application/json", "user-agent": USER_AGENT}
        return method, f"{base}?{_encode_query(signed1.params)}", headers

    def _v3_request(
        self,
        host: str,
        base: str,
        pathname: str,
        action: str,
        version: str,
        query: Mapping[str, str],
        http_method: str | None,
    ) -> tuple[str, str, dict[str, str]]:
        """As alibabacloud-tea-openapi's do_request for style RPC: POST, parameters in the query,
        Action/Version in x-acs-* headers, empty body. Format=JSON is explicit: the docs disagree on the
        default. A GET (AuthorizeFileUpload) carries exactly the SDK's query; it answers JSON. With
        `fc-trigger` the same request is sent, signed for the trigger's gateway instead."""
        credentials = self._credentials()
        method = http_method or "POST"
        v3_query = {**query, "Format": "JSON"} if method == "POST" else dict(query)
        url = f"{base}?{_encode_query(v3_query)}"
        if self.signature_version == "fc-trigger":
            signed = sign_fc_trigger(method, pathname, v3_query, credentials)
            headers = {
                "x-acs-action": action,
                "x-acs-version": version,
                "accept": "application/json",
                "user-agent": USER_AGENT,
                **signed.headers,
            }
            return method, url, headers
        signed3 = sign_v3(
            method,
            host,
            action,
            version,
            v3_query,
            b"",
            credentials,
            headers={"user-agent": USER_AGENT},
            pathname=pathname,
        )
        return method, url, signed3.headers


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


def _rpc_document(answer: Answer) -> dict[str, Any]:
    """The document of a 2xx answer; `ApiError` with the answer's Code/RequestId/HostId otherwise."""
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
    return document


def _raise(error: ApiError) -> dict[str, Any]:
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
        endpoint: str = DEFAULT_PICWISH_ENDPOINT,
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
        self._transport = HttpTransport(session, timeout)

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


def _picwish_result(answer: Answer) -> SegmentResult:
    request_id = answer.headers.get("x-ca-request-id", "")
    try:
        document = parse_document(answer.body, "application/json")
    except (ValueError, SyntaxError):
        document = {}
    status = answer.status
    json_status = document.get("status")
    if status < 400 and isinstance(json_status, int) and json_status >= 400:
        status = json_status
    found = document.get("data")
    data: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
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
