"""Alibaba Cloud request signing: RPC signature v1 (HMAC-SHA1), v3 (ACS3-HMAC-SHA256), FC HTTP triggers.

`sign_v1`, `sign_v3` and `sign_fc_trigger` are pure functions (clock and nonce injectable) returning the
string-to-sign / canonical request with the signature, so a `SignatureDoesNotMatch` can be explained by
comparing it with the server's. Verification lives in `segflow_engine.verify`: a function never verifies a
signature. Standard library only: the layer must stay light to import.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import quote

from segflow.values import Value

V1_SIGNATURE_METHOD = "HMAC-SHA1"
V1_SIGNATURE_VERSION = "1.0"
V3_ALGORITHM = "ACS3-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_USER_AGENT = "segflow"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class Credentials(Value):
    """An AccessKey pair, with the STS token when the key is temporary. Never shown by repr/str. Not a
    tuple: a tuple can be iterated, indexed or JSON-dumped, and the secret with it."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None

    def __repr__(self) -> str:
        token = "set" if self.security_token else "none"
        return (
            f"Credentials(access_key_id={self.access_key_id!r}, access_key_secret=<hidden>, "
            f"security_token=<{token}>)"
        )

    __str__ = __repr__


def percent_encode(value: str) -> str:
    """RFC 3986 encoding of UTF-8 bytes: only `A-Z a-z 0-9 - _ . ~` stay, space is `%20`, `*` is `%2A`."""
    return quote(value, safe="~", encoding="utf-8")


def utc_timestamp(now: datetime) -> str:
    """`yyyy-MM-ddTHH:mm:ssZ` in UTC; a naive datetime is taken as UTC already."""
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc)
    return now.strftime(TIMESTAMP_FORMAT)


def _now_utc(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(timezone.utc)


def _new_nonce() -> str:
    # 128 random bits, as uuid4().hex, without importing uuid (and platform) at cold start.
    return os.urandom(16).hex()


def _canonical_query(params: Mapping[str, str], *, encode_names: bool = True) -> str:
    """Sorted `k=v&k=v` with names and values percent-encoded (shared by v1 and v3). `encode_names=False`
    leaves the names as they are, as alibabacloud-openapi-util's `get_canonical_query_string` does."""
    name = percent_encode if encode_names else str
    return "&".join(f"{name(k)}={percent_encode(params[k])}" for k in sorted(params))


# ---------------------------------------------------------------------------------------------- v1


class SignedV1(Value):
    """A v1-signed parameter set: `params` is everything to send, `Signature` included."""

    params: dict[str, str]
    string_to_sign: str
    signature: str


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """`METHOD&%2F&` + percentEncode(sorted canonical query); `Signature` itself is left out."""
    unsigned = {k: v for k, v in params.items() if k != "Signature"}
    return f"{method.upper()}&%2F&{percent_encode(_canonical_query(unsigned))}"


def v1_signature(string_to_sign: str, secret: str) -> str:
    """Base64(HMAC-SHA1(key = secret + "&", string_to_sign))."""
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def sign_v1(
    method: str,
    params: Mapping[str, str],
    credentials: Credentials,
    *,
    now: datetime | None = None,
    nonce: str | None = None,
) -> SignedV1:
    """Add the v1 protocol parameters to `params` (Format=JSON unless given; SecurityToken with STS) and sign.

    For a POST with a form body, pass the query and the form parameters together: both are signed.
    """
    signed: dict[str, str] = {k: v for k, v in params.items() if k != "Signature"}
    signed.setdefault("Format", "JSON")
    signed["AccessKeyId"] = credentials.access_key_id
    signed["SignatureMethod"] = V1_SIGNATURE_METHOD
    signed["SignatureVersion"] = V1_SIGNATURE_VERSION
    signed["SignatureNonce"] = nonce if nonce is not None else _new_nonce()
    signed["Timestamp"] = utc_timestamp(_now_utc(now))
    if credentials.security_token:
        signed["SecurityToken"] = credentials.security_token
    string_to_sign = v1_string_to_sign(method, signed)
    signature = v1_signature(string_to_sign, credentials.access_key_secret)
    return SignedV1(
        params={**signed, "Signature": signature}, string_to_sign=string_to_sign, signature=signature
    )


# ---------------------------------------------------------------------------------------------- v3


class SignedV3(Value):
    """A v3-signed request: `headers` is every header to send, `Authorization` and `host` included."""

    headers: dict[str, str]
    canonical_request: str
    string_to_sign: str
    signature: str


def v3_canonical_request(
    method: str,
    pathname: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    signed_headers: list[str],
    payload_hash: str,
    *,
    encode_names: bool = True,
) -> str:
    """Method, path, sorted encoded query, `name:value` lines of the signed headers, their list, body hash.

    `headers` must have lower-case names; `signed_headers` is the sorted lower-case list.
    """
    header_lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            pathname or "/",
            _canonical_query(query, encode_names=encode_names),
            header_lines,
            ";".join(signed_headers),
            payload_hash,
        ]
    )


def v3_string_to_sign(canonical_request: str) -> str:
    return f"{V3_ALGORITHM}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"


def v3_signature(string_to_sign: str, secret: str) -> str:
    return hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()


def sign_v3(
    method: str,
    host: str,
    action: str,
    version: str,
    query: Mapping[str, str],
    body: bytes,
    credentials: Credentials,
    *,
    headers: Mapping[str, str] | None = None,
    now: datetime | None = None,
    nonce: str | None = None,
    pathname: str = "/",
) -> SignedV3:
    """Sign an RPC call as the official SDK does: every header sent is signed, parameters go in the query.

    Sets `host`, `x-acs-action`, `x-acs-version`, `x-acs-date`, `x-acs-signature-nonce`,
    `x-acs-content-sha256`, `accept: application/json`, `user-agent` (unless given), `content-type` for a
    non-empty body (form-urlencoded unless given) and, with STS, `x-acs-accesskey-id` and
    `x-acs-security-token`. Extra `headers` are sent and signed too; send the result unchanged.
    `pathname` is the request path exactly as sent (already percent-encoded), `/` for RPC calls; with a
    pathname and a body it signs ROA-style calls the same way (FC 3.0's
    `POST /2023-03-30/functions/{name}/invocations`). The headers are those an RPC call of the official Tea
    SDK (alibabacloud-tea-openapi 0.4.x) sends.
    """
    out: dict[str, str] = {
        "host": host,
        "x-acs-version": version,
        "x-acs-action": action,
        "user-agent": DEFAULT_USER_AGENT,
        "x-acs-date": utc_timestamp(_now_utc(now)),
        "x-acs-signature-nonce": nonce if nonce is not None else _new_nonce(),
        "accept": "application/json",
    }
    for name, value in (headers or {}).items():
        if name.lower() != "authorization":
            out[name.lower()] = value
    if body and "content-type" not in out:
        out["content-type"] = FORM_CONTENT_TYPE
    payload_hash = hashlib.sha256(body).hexdigest()
    out["x-acs-content-sha256"] = payload_hash
    if credentials.security_token:
        out["x-acs-accesskey-id"] = credentials.access_key_id
        out["x-acs-security-token"] = credentials.security_token
    signed_headers = sorted(out)
    canonical = v3_canonical_request(method, pathname, query, out, signed_headers, payload_hash)
    return _signed_v3(out, "Authorization", canonical, signed_headers, credentials)


def _signed_v3(
    headers: dict[str, str],
    authorization_name: str,
    canonical: str,
    signed_headers: list[str],
    credentials: Credentials,
) -> SignedV3:
    """Sign the canonical request and add the `Authorization` header (under `authorization_name`)."""
    string_to_sign = v3_string_to_sign(canonical)
    signature = v3_signature(string_to_sign, credentials.access_key_secret)
    headers[authorization_name] = (
        f"{V3_ALGORITHM} Credential={credentials.access_key_id},"
        f"SignedHeaders={';'.join(signed_headers)},Signature={signature}"
    )
    return SignedV3(
        headers=headers, canonical_request=canonical, string_to_sign=string_to_sign, signature=signature
    )


# ------------------------------------------------------------------------- FC HTTP trigger (function auth)

FC_TRIGGER_SIGNED_HEADERS = ("x-acs-date", "x-acs-security-token")


def sign_fc_trigger(
    method: str,
    pathname: str,
    query: Mapping[str, str],
    credentials: Credentials,
    *,
    now: datetime | None = None,
) -> SignedV3:
    """Sign a call to a Function Compute HTTP trigger with `authType: function`, as FC's own example does.

    FC, "Configure signature authentication for HTTP triggers": the Python example hands
    `alibabacloud_openapi_util.client.Client.get_authorization(request, "ACS3-HMAC-SHA256", "", ak, sk)` a
    request made of the method, the URL's path with `$` written `%24`, the query (one value per name) and
    exactly two headers, `x-acs-date` and `x-acs-security-token` (the STS token, or empty). So the payload
    is "" (the body is not covered), Host is not signed, and the query names go unencoded as that function
    writes them. `pathname` is the path exactly as the URL carries it. Returns the three headers to send
    (`x-acs-date`, `x-acs-security-token`, `authorization`) besides the request's own.
    """
    headers = {
        "x-acs-date": utc_timestamp(_now_utc(now)),
        "x-acs-security-token": credentials.security_token or "",
    }
    signed_headers = sorted(FC_TRIGGER_SIGNED_HEADERS)
    path = (pathname or "/").replace("$", "%24")
    canonical = v3_canonical_request(method, path, query, headers, signed_headers, "", encode_names=False)
    return _signed_v3(headers, "authorization", canonical, signed_headers, credentials)
