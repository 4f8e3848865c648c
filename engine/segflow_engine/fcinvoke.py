"""Queue a job as an asynchronous invocation of the engine's own function (FC 3.0 `InvokeFunction`).

FC, "API reference (2023-03-30): InvokeFunction": `POST /2023-03-30/functions/{functionName}/invocations`
with `x-fc-invocation-type: Async` and the payload as body (at most 128 KB), signed ACS3-HMAC-SHA256 with
every header sent (what `segflow.signing.sign_v3` does, as `segflow_cli.fcapi` signs its calls); FC answers
202 with the invocation's `x-fc-request-id` and later delivers the payload to an instance as `POST /invoke`,
retried per the function's `asyncInvokeConfig` ("Asynchronous invocations"). The endpoint is
`SEGFLOW_FC_ENDPOINT` when set (a template with `{account_id}` and `{region}`, as the `segflow` command reads
it), else the account's public one, `https://<account id>.<region>.fc.aliyuncs.com` ("Endpoints").
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import requests

from segflow.errors import ApiError, ConfigError
from segflow.signing import percent_encode, sign_v3
from segflow_engine.cloud import RoleKeys

FC_API_VERSION = "2023-03-30"
DEFAULT_ENDPOINT = "https://{account_id}.{region}.fc.aliyuncs.com"
USER_AGENT = "segflow-engine/0.1 (async jobs)"
TIMEOUT = (5.0, 30.0)  # (connect, read): an asynchronous invocation is answered at once


def fc_endpoint(template: str, *, account_id: str, region: str) -> str:
    """The endpoint a template names; `ConfigError` when it needs an account id or region it was not given."""
    url = template.strip().replace("{region}", region).replace("{account_id}", account_id)
    if "://" not in url:
        url = f"https://{url}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise ConfigError(f"SEGFLOW_FC_ENDPOINT {template!r} must be scheme://host[:port]")
    if ".." in parts.netloc or parts.netloc.startswith(".") or "{" in parts.netloc:
        raise ConfigError(
            f"the FC endpoint {template!r} needs FC_ACCOUNT_ID and FC_REGION (set by Function Compute)"
        )
    return f"{parts.scheme}://{parts.netloc}"


class FcAsyncInvoker:
    """Asynchronous invocations of one function, signed with the role's current key."""

    def __init__(self, endpoint: str, function: str, keys: RoleKeys) -> None:
        self.endpoint = endpoint
        self.function = function
        self._keys = keys
        self._session = requests.Session()
        self._session.trust_env = False  # FC's API is called directly, never through a proxy

    def invoke(self, payload: bytes) -> str:
        """Queue `payload`; returns FC's request id. `ApiError` with FC's Code and status when refused."""
        pathname = f"/{FC_API_VERSION}/functions/{percent_encode(self.function)}/invocations"
        headers = {
            "content-type": "application/octet-stream",
            "x-fc-invocation-type": "Async",
            "user-agent": USER_AGENT,
        }
        host = urlsplit(self.endpoint).netloc
        signed = sign_v3(
            "POST",
            host,
            "InvokeFunction",
            FC_API_VERSION,
            {},
            payload,
            self._keys.current(),
            headers=headers,
            pathname=pathname,
        )
        try:
            response = self._session.post(
                self.endpoint + pathname, data=payload, headers=signed.headers, timeout=TIMEOUT
            )
        except requests.RequestException as exc:
            raise ApiError(
                f"could not queue the job: FC unreachable ({type(exc).__name__})", code="ServiceUnavailable"
            ) from exc
        if response.status_code != 202:
            raise _refusal(response)
        return response.headers.get("x-fc-request-id", "")


def _refusal(response: requests.Response) -> ApiError:
    """FC's error (`{"Code", "Message", "RequestId"}`, 2023-03-30 data type Error) as an `ApiError`: a
    403 (the role may not invoke the function) is a deployment fault for the caller, a 5xx a retry."""
    try:
        document = json.loads(response.content)
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        document = {}
    return ApiError(
        f"could not queue the job: {document.get('Message') or f'HTTP {response.status_code}'}",
        code=str(document.get("Code") or "ServiceUnavailable"),
        http_status=response.status_code,
        request_id=str(document.get("RequestId") or response.headers.get("x-fc-request-id") or "") or None,
    )
