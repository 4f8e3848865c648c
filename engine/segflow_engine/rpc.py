"""Reading an RPC call: which catalogue action it names (`route`), its media URL, its form parameters.

imageseg (2019-12-30) and videoseg (2020-03-20) are told apart by `Version`; `GetAsyncJobResult` exists in
both. The engine's server (`segflow_engine.server.Engine`) verifies the signature first, then routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from segflow.catalogue import Action, get_action
from segflow.errors import InputValidationError, UnknownActionError
from segflow_engine.served import require_served

PRODUCT_BY_VERSION = {"2019-12-30": "imageseg", "2020-03-20": "videoseg"}
ASYNC_RESULT_ACTION = "GetAsyncJobResult"
INTERNAL_ERROR = {"imageseg": "InternalError", "videoseg": "InternalServerError"}


def job_error_code(action: str) -> str:
    """The code a job fails with when its model breaks: the product's internal error, `.Algo`."""
    return f"{INTERNAL_ERROR[get_action(action).product]}.Algo"


def route(params: Mapping[str, str], served: frozenset[str] | None = None) -> Action:
    """The catalogue action an RPC call names; `UnsupportedOperation` if unknown or of another Version,
    `InvalidApi.NotPurchase` if this engine does not serve it (`served`, default: the process's)."""
    name = params.get("Action", "").strip()
    version = params.get("Version", "").strip()
    if not name:
        raise InputValidationError(
            "The input parameter 'Action' that is mandatory is not supplied", code="MissingParameter"
        )
    if not version:
        raise InputValidationError(
            "The input parameter 'Version' that is mandatory is not supplied", code="MissingParameter"
        )
    product = PRODUCT_BY_VERSION.get(version)
    unsupported = UnknownActionError(
        f"the action {name!r} is not supported in version {version!r}", code="UnsupportedOperation"
    )
    if product is None:
        raise unsupported
    try:
        action = get_action(name)
    except UnknownActionError:
        raise unsupported from None
    # GetAsyncJobResult exists in both products (imageseg for SegmentBody with Async=true).
    if action.name != ASYNC_RESULT_ACTION and action.product != product:
        raise unsupported
    if action.media not in ("image", "video", "none") or action.product == "picwish":
        raise unsupported
    require_served(action.name, served)
    return action


def require_media_url(action: Action, params: Mapping[str, str]) -> str:
    url = params.get(action.url_param, "").strip()
    if not url:
        code = "MissingImageURL" if action.url_param == "ImageURL" else "MissingParameter"
        raise InputValidationError(f"{action.url_param} is mandatory for {action.name}", code=code)
    return url


def form_fields(content_type: str, body: bytes) -> dict[str, str]:
    """The parameters of a urlencoded form body (an RPC call may carry them there instead of the query)."""
    if content_type.split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return {}
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}
