"""Alibaba Cloud request signing: RPC signature v1 (HMAC-SHA1) and v3 (ACS3-HMAC-SHA256).

Client side, `sign_v1` and `sign_v3` are pure functions: the clock and the nonce can be injected and
they return the string-to-sign / canonical request with the signature, so a `SignatureDoesNotMatch`
can be explained by comparing it with the server's. `sign_v3` produces the headers an RPC call of the
official Tea SDK (alibabacloud-tea-openapi 0.4.x) sends, parameters in the query.

Server side, `verify_request` checks either version the way the service does (spec section 1):
signature, 15-minute timestamp window, nonce never reused within that window, known AccessKey.

Standard library only: the layer must stay light to import.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import NamedTuple
from urllib.parse import parse_qsl, quote

from segflow.errors import SigningError

V1_SIGNATURE_METHOD = "HMAC-SHA1"
V1_SIGNATURE_VERSION = "1.0"
V3_ALGORITHM = "ACS3-HMAC-SHA256"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_USER_AGENT = "segflow"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

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


class Credentials:
    """An AccessKey pair, with the STS token when the key is temporary. Never shown by repr/str.

    Immutable and compared by value. A small class, not a dataclass (`dataclasses` imports `inspect`,
    about 6 ms of the client's cold start) and not a NamedTuple: a tuple can be iterated, indexed or
    JSON-dumped, and the secret with it.
    """

    __slots__ = ("access_key_id", "access_key_secret", "security_token")

    access_key_id: str
    access_key_secret: str
    security_token: str | None

    def __init__(self, access_key_id: str, access_key_secret: str, security_token: str | None = None) -> None:
        object.__setattr__(self, "access_key_id", access_key_id)
        object.__setattr__(self, "access_key_secret", access_key_secret)
        object.__setattr__(self, "security_token", security_token)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Credentials are immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Credentials are immutable; cannot delete {name!r}")

    def _values(self) -> tuple[str, str, str | None]:
        return (self.access_key_id, self.access_key_secret, self.security_token)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Credentials):
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __reduce__(self) -> tuple[type[Credentials], tuple[str, str, str | None]]:
        # copy and pickle rebuild through __init__: the default would call the refusing __setattr__.
        return (type(self), self._values())

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


def _canonical_query(params: Mapping[str, str]) -> str:
    """Sorted `k=v&k=v` with names and values percent-encoded (shared by v1 and v3)."""
    return "&".join(f"{percent_encode(k)}={percent_encode(params[k])}" for k in sorted(params))


# ---------------------------------------------------------------------------------------------- v1


class SignedV1(NamedTuple):
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


class SignedV3(NamedTuple):
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
) -> str:
    """Method, path, sorted encoded query, `name:value` lines of the signed headers, their list, body hash.

    `headers` must have lower-case names; `signed_headers` is the sorted lower-case list.
    """
    header_lines = "".join(f"{name}:{headers[name].strip()}\n" for name in signed_headers)
    return "\n".join(
        [
            method.upper(),
            pathname or "/",
            _canonical_query(query),
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
    string_to_sign = v3_string_to_sign(canonical)
    signature = v3_signature(string_to_sign, credentials.access_key_secret)
    out["Authorization"] = (
        f"{V3_ALGORITHM} Credential={credentials.access_key_id},"
        f"SignedHeaders={';'.join(signed_headers)},Signature={signature}"
    )
    return SignedV3(
        headers=out, canonical_request=canonical, string_to_sign=string_to_sign, signature=signature
    )


# ------------------------------------------------------------------------------------- server side


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
    current = _now_utc(now)
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
