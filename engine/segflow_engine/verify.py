"""Server-side verification of Alibaba Cloud RPC signatures (v1 HMAC-SHA1, v3 ACS3-HMAC-SHA256).

`verify_request` checks either version the way the service does (shared/VISION-API.md, "Signing"):
signature, 15-minute timestamp window, nonce never reused within that window, known AccessKey. It
rebuilds the string to sign with the same pure functions the client signs with (`segflow.signing`), so
client and server can never disagree on the canonical form. Only the local engine and the test doubles
verify; the layer that ships to Function Compute only signs.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import NamedTuple
from urllib.parse import parse_qsl

from segflow.errors import SigningError
from segflow.signing import (
    FORM_CONTENT_TYPE,
    TIMESTAMP_FORMAT,
    V1_SIGNATURE_METHOD,
    V1_SIGNATURE_VERSION,
    V3_ALGORITHM,
    percent_encode,
    utc_timestamp,
    v1_signature,
    v1_string_to_sign,
    v3_canonical_request,
    v3_signature,
    v3_string_to_sign,
)

# Parameters of the v1 signature protocol itself; everything else is the caller's business.
_V1_PROTOCOL_PARAMS = frozenset(
    {
        "AccessKeyId",
        "SecurityToken",
        "Signature",
        "SignatureMethod",
        "SignatureNonce",
        "SignatureType",
        "SignatureVersion",
        "Timestamp",
    }
)
# v3 headers whose values verify_request relies on: a client must have signed them when it sends them.
_V3_MUST_SIGN = (
    "x-acs-accesskey-id",
    "x-acs-action",
    "x-acs-content-sha256",
    "x-acs-date",
    "x-acs-security-token",
    "x-acs-signature-nonce",
    "x-acs-version",
)
_REDACTED = "<redacted>"


class NonceCache:
    """Nonces seen per AccessKey in the last `window_seconds`; thread-safe, at most `max_entries` kept.

    When full, the oldest nonce is forgotten first: it is the one closest to leaving the window anyway.
    """

    def __init__(self, window_seconds: float = 900, max_entries: int = 1_000_000) -> None:
        self.window_seconds = window_seconds
        self.max_entries = max_entries
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def check_and_add(self, access_key_id: str, nonce: str, now: float) -> bool:
        """Remember the nonce and return True, or return False if it was already used in the window."""
        key = (access_key_id, nonce)
        with self._lock:
            self._forget_older_than(now - self.window_seconds)
            if key in self._seen:
                return False
            self._seen[key] = now
            while len(self._seen) > self.max_entries:
                self._seen.popitem(last=False)
            return True

    def size(self) -> int:
        """How many nonces are remembered (not `__len__`: an empty cache must not be falsy)."""
        with self._lock:
            return len(self._seen)

    def _forget_older_than(self, cutoff: float) -> None:
        while self._seen:
            oldest_key = next(iter(self._seen))
            if self._seen[oldest_key] >= cutoff:
                break
            del self._seen[oldest_key]


class SignatureMismatchError(SigningError):
    """`SignatureDoesNotMatch`, carrying the server's string-to-sign (STS token redacted) for debugging.

    The string-to-sign is kept out of the message on purpose: messages end up in logs and answers.
    """

    def __init__(self, message: str, *, server_string_to_sign: str) -> None:
        super().__init__(message, code="SignatureDoesNotMatch", http_status=400)
        self.server_string_to_sign = server_string_to_sign


class VerifiedRequest(NamedTuple):
    """What a correctly signed request says: who sent it and its business parameters."""

    access_key_id: str
    security_token: str | None
    signature_version: str  # "1.0" or "v3"
    params: dict[str, str]


def _error(code: str, message: str, status: int = 400) -> SigningError:
    return SigningError(message, code=code, http_status=status)


def _parse_timestamp(value: str, name: str) -> datetime:
    try:
        return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise _error(
            "InvalidTimeStamp.Format", f"{name} must be UTC yyyy-MM-ddTHH:mm:ssZ, got {value!r}"
        ) from None


def _check_skew(sent: datetime, now: datetime, max_skew_seconds: float, name: str) -> None:
    skew = abs((now - sent).total_seconds())
    if skew > max_skew_seconds:
        raise _error(
            "InvalidTimeStamp.Expired",
            f"{name} {utc_timestamp(sent)} is {skew:.0f} s away from the server time {utc_timestamp(now)}"
            f" (at most {max_skew_seconds:.0f} s allowed)",
        )


def _secret_for(access_key_id: str, lookup_secret: Callable[[str], str | None]) -> str:
    secret = lookup_secret(access_key_id)
    if not secret:
        raise _error("InvalidAccessKeyId.NotFound", f"AccessKeyId {access_key_id!r} is not found", 404)
    return secret


def _check_nonce(nonces: NonceCache, access_key_id: str, nonce: str, now: datetime) -> None:
    if not nonces.check_and_add(access_key_id, nonce, now.timestamp()):
        raise _error("SignatureNonceUsed", f"The nonce {nonce!r} was used within the last 15 minutes")


def _form_params(headers: Mapping[str, str], body: bytes) -> dict[str, str]:
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if not body or content_type != FORM_CONTENT_TYPE:
        return {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _error("InvalidParameter", "The form body is not UTF-8") from None
    return dict(parse_qsl(text, keep_blank_values=True))


def _redact(text: str, secret_value: str | None) -> str:
    if not secret_value:
        return text
    once = percent_encode(secret_value)
    for form in (percent_encode(once), once, secret_value):  # v1 encodes values twice
        text = text.replace(form, _REDACTED)
    return text


def verify_request(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    *,
    nonces: NonceCache,
    now: datetime | None = None,
    max_skew_seconds: float = 900,
) -> VerifiedRequest:
    """Check a request signed with v1 (`Signature` in query or form) or v3 (`Authorization: ACS3-…`).

    Checks, in order: required pieces, timestamp format and skew, AccessKey known, body hash (v3),
    signature (constant-time compare), then the nonce, so only correctly signed requests use one up.
    Raises `SigningError` with the service's code; messages never hold the secret or a signature.
    """
    lower_headers = {name.lower(): value for name, value in headers.items()}
    form = _form_params(lower_headers, body)
    current = now if now is not None else datetime.now(timezone.utc)
    if current.tzinfo is None:
        current = current.replace(tzinfo=timezone.utc)
    authorization = lower_headers.get("authorization", "").strip()
    if "Signature" in query or "Signature" in form:
        return _verify_v1(method, {**query, **form}, lookup_secret, nonces, current, max_skew_seconds)
    if authorization:
        return _verify_v3(
            method,
            path,
            query,
            lower_headers,
            body,
            form,
            authorization,
            lookup_secret,
            nonces,
            current,
            max_skew_seconds,
        )
    raise _error(
        "MissingParameter", "The request is not signed: no Signature parameter, no Authorization header"
    )


def _verify_v1(
    method: str,
    params: dict[str, str],
    lookup_secret: Callable[[str], str | None],
    nonces: NonceCache,
    now: datetime,
    max_skew_seconds: float,
) -> VerifiedRequest:
    for name in ("AccessKeyId", "SignatureMethod", "SignatureVersion", "SignatureNonce", "Timestamp"):
        if not params.get(name):
            raise _error(
                "MissingParameter", f"The input parameter {name!r} that is mandatory is not supplied"
            )
    if params["SignatureMethod"] != V1_SIGNATURE_METHOD:
        raise _error("IncompleteSignature", f"SignatureMethod must be {V1_SIGNATURE_METHOD}")
    if params["SignatureVersion"] != V1_SIGNATURE_VERSION:
        raise _error("IncompleteSignature", f"SignatureVersion must be {V1_SIGNATURE_VERSION}")
    sent_at = _parse_timestamp(params["Timestamp"], "Timestamp")
    _check_skew(sent_at, now, max_skew_seconds, "Timestamp")
    access_key_id = params["AccessKeyId"]
    secret = _secret_for(access_key_id, lookup_secret)
    string_to_sign = v1_string_to_sign(method, params)
    expected = v1_signature(string_to_sign, secret)
    if not hmac.compare_digest(expected.encode(), params["Signature"].encode()):
        raise SignatureMismatchError(
            "The request signature does not conform to Aliyun standards (v1)",
            server_string_to_sign=_redact(string_to_sign, params.get("SecurityToken")),
        )
    _check_nonce(nonces, access_key_id, params["SignatureNonce"], now)
    business = {k: v for k, v in params.items() if k not in _V1_PROTOCOL_PARAMS}
    return VerifiedRequest(
        access_key_id=access_key_id,
        security_token=params.get("SecurityToken") or None,
        signature_version=V1_SIGNATURE_VERSION,
        params=business,
    )


def _parse_authorization(value: str) -> tuple[str, list[str], str]:
    """`ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=hex` -> (AK, headers, signature)."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != V3_ALGORITHM:
        raise _error("IncompleteSignature", f"Authorization must use {V3_ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, field_value = part.strip().partition("=")
        if sep:
            fields[name.strip()] = field_value.strip()
    credential = fields.get("Credential", "")
    signed = [h for h in fields.get("SignedHeaders", "").split(";") if h]
    signature = fields.get("Signature", "")
    if not credential or not signed or not signature:
        raise _error("IncompleteSignature", "Authorization must name Credential, SignedHeaders and Signature")
    return credential, signed, signature


def _verify_v3(
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: dict[str, str],
    body: bytes,
    form: dict[str, str],
    authorization: str,
    lookup_secret: Callable[[str], str | None],
    nonces: NonceCache,
    now: datetime,
    max_skew_seconds: float,
) -> VerifiedRequest:
    access_key_id, signed_headers, signature = _parse_authorization(authorization)
    signed_lower = [h.lower() for h in signed_headers]
    for name in ("x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
        if not headers.get(name):
            raise _error("MissingParameter", f"The header {name!r} that is mandatory is not supplied")
    must_sign = [h for h in _V3_MUST_SIGN if h in headers]
    if body and "content-type" in headers:
        must_sign.append("content-type")
    for name in must_sign:
        if name not in signed_lower:
            raise _error("IncompleteSignature", f"The header {name!r} is sent but not signed")
    for name in signed_lower:
        if name not in headers:
            raise _error("IncompleteSignature", f"The signed header {name!r} is not in the request")
    sent_at = _parse_timestamp(headers["x-acs-date"], "x-acs-date")
    _check_skew(sent_at, now, max_skew_seconds, "x-acs-date")
    secret = _secret_for(access_key_id, lookup_secret)
    payload_hash = hashlib.sha256(body).hexdigest()
    if not hmac.compare_digest(payload_hash, headers["x-acs-content-sha256"].strip().lower()):
        raise _error("SignatureDoesNotMatch", "x-acs-content-sha256 is not the SHA-256 of the body")
    canonical = v3_canonical_request(method, path, query, headers, signed_lower, payload_hash)
    string_to_sign = v3_string_to_sign(canonical)
    expected = v3_signature(string_to_sign, secret)
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise SignatureMismatchError(
            "The request signature does not conform to Aliyun standards (v3)",
            server_string_to_sign=_redact(canonical, headers.get("x-acs-security-token")),
        )
    _check_nonce(nonces, access_key_id, headers["x-acs-signature-nonce"], now)
    params = {**query, **form}
    if headers.get("x-acs-action"):
        params["Action"] = headers["x-acs-action"]
    if headers.get("x-acs-version"):
        params["Version"] = headers["x-acs-version"]
    return VerifiedRequest(
        access_key_id=access_key_id,
        security_token=headers.get("x-acs-security-token") or None,
        signature_version="v3",
        params=params,
    )


def trusted_request(query: Mapping[str, str], headers: Mapping[str, str], body: bytes) -> VerifiedRequest:
    """The business parameters of a request whose signature someone else checked: Function Compute's HTTP
    trigger with `authType: function` lets through only requests it verified (`SEGFLOW_ENGINE_AUTH=
    fc-gateway`). Read as `verify_request` reads them (query and form, Action and Version from the
    `x-acs-*` headers of a v3 call, the v1 protocol's own parameters left out); the caller is named after
    the Authorization's Credential (what per-key quotas count), else `fc-gateway`."""
    lower_headers = {name.lower(): value for name, value in headers.items()}
    params = {**query, **_form_params(lower_headers, body)}
    business = {k: v for k, v in params.items() if k not in _V1_PROTOCOL_PARAMS}
    for name, header in (("Action", "x-acs-action"), ("Version", "x-acs-version")):
        if lower_headers.get(header):
            business[name] = lower_headers[header]
    credential = lower_headers.get("authorization", "").partition("Credential=")[2].split(",")[0].strip()
    return VerifiedRequest(
        access_key_id=credential or params.get("AccessKeyId") or "fc-gateway",
        security_token=lower_headers.get("x-acs-security-token") or None,
        signature_version="fc-gateway",
        params=business,
    )
