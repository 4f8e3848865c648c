"""Server-side verification (`verify_request`) of v1 and v3 requests, as the local engine uses it.

The rules come from VISION-API.md §1 (VISION-API.md §1): the signature covers every
parameter, `Timestamp` / `x-acs-date` may be at most 15 minutes off (`InvalidTimeStamp.Expired`),
`SignatureNonce` must not repeat within 15 minutes (`SignatureNonceUsed`), STS adds `SecurityToken`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlencode

import pytest
from aliyunsdkcore.auth.composer.rpc_signature_composer import get_signed_url

from segflow.errors import SigningError
from segflow.signing import (
    Credentials,
    sign_v1,
    sign_v3,
    v3_canonical_request,
    v3_signature,
    v3_string_to_sign,
)
from segflow_engine.verify import NonceCache, SignatureMismatchError, VerifiedRequest, verify_request
from tests.support.signing_cases import (
    AWKWARD_SECRET,
    FIXED_NONCE,
    FIXED_NOW,
    PLAIN,
    STS,
    CapturedRequest,
    capture_official_rpc_call,
)

KEYS = {c.access_key_id: c.access_key_secret for c in (PLAIN, STS, AWKWARD_SECRET)}
HOST = "127.0.0.1:8780"
IMAGE = {"ImageURL": "http://bucket.oss-cn-shanghai.aliyuncs.com/in/a b*~中.jpg", "ReturnForm": "mask"}
FORM = "application/x-www-form-urlencoded"


def lookup(access_key_id: str) -> str | None:
    return KEYS.get(access_key_id)


def _stamp_time(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def verify_captured(
    captured: CapturedRequest,
    *,
    nonces: NonceCache | None = None,
    now: datetime | None = None,
    secrets: Callable[[str], str | None] = lookup,
) -> VerifiedRequest:
    stamp = captured.headers.get("x-acs-date") or captured.query["Timestamp"]
    return verify_request(
        captured.method,
        captured.pathname,
        captured.query,
        captured.headers,
        captured.body,
        secrets,
        nonces=nonces or NonceCache(),
        now=now or _stamp_time(stamp),
    )


def v1_request(
    creds: Credentials = PLAIN, *, now: datetime = FIXED_NOW, nonce: str = FIXED_NONCE
) -> dict[str, str]:
    params = {"Action": "SegmentCommonImage", "Version": "2019-12-30", **IMAGE}
    return sign_v1("GET", params, creds, now=now, nonce=nonce).params


def verify_v1(
    query: dict[str, str], *, nonces: NonceCache | None = None, now: datetime = FIXED_NOW
) -> VerifiedRequest:
    return verify_request("GET", "/", query, {}, b"", lookup, nonces=nonces or NonceCache(), now=now)


def v3_request(
    creds: Credentials = PLAIN, *, now: datetime = FIXED_NOW, nonce: str = FIXED_NONCE, body: bytes = b""
) -> tuple[dict[str, str], dict[str, str], bytes]:
    signed = sign_v3(
        "POST", HOST, "SegmentCommonImage", "2019-12-30", IMAGE, body, creds, now=now, nonce=nonce
    )
    return dict(IMAGE), signed.headers, body


def verify_v3(
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
    *,
    nonces: NonceCache | None = None,
    now: datetime = FIXED_NOW,
) -> VerifiedRequest:
    return verify_request("POST", "/", query, headers, body, lookup, nonces=nonces or NonceCache(), now=now)


def refused(code: str, call: Callable[[], object]) -> SigningError:
    with pytest.raises(SigningError) as caught:
        call()
    assert caught.value.code == code
    return caught.value


# ------------------------------------------------------------------ what official clients send


@pytest.mark.parametrize("form", [None, {"Extra": "a+b c", "Empty": ""}], ids=["query", "form-body"])
def test_accepts_v3_request_of_the_official_tea_sdk(form: dict[str, str] | None) -> None:
    """Spec section 1 note: today's official SDKs send signature v3 with x-acs-* headers."""
    captured = capture_official_rpc_call(PLAIN, query=IMAGE, body=form)

    verified = verify_captured(captured)

    assert verified.signature_version == "v3"
    assert verified.access_key_id == PLAIN.access_key_id
    assert verified.security_token is None
    assert verified.params == {
        **IMAGE,
        **(form or {}),
        "Action": "SegmentCommonImage",
        "Version": "2019-12-30",
    }


@pytest.mark.parametrize("form", [None, {"Extra": "a+b c", "Empty": ""}], ids=["query", "form-body"])
def test_accepts_v1_request_of_the_official_tea_sdk(form: dict[str, str] | None) -> None:
    """Spec section 1: v1 parameters in the query or a form body are all signed."""
    captured = capture_official_rpc_call(PLAIN, signature_algorithm="v2", query=IMAGE, body=form)

    verified = verify_captured(captured)

    assert verified.signature_version == "1.0"
    assert verified.params == {
        **IMAGE,
        **(form or {}),
        "Action": "SegmentCommonImage",
        "Version": "2019-12-30",
        "Format": "json",
    }


@pytest.mark.parametrize("algorithm", [None, "v2"], ids=["v3", "v1"])
def test_accepts_sts_request_of_the_official_tea_sdk_and_reports_the_token(algorithm: str | None) -> None:
    """Spec section 1: with STS credentials the request also carries SecurityToken."""
    captured = capture_official_rpc_call(STS, signature_algorithm=algorithm, query=IMAGE)

    verified = verify_captured(captured)

    assert verified.access_key_id == STS.access_key_id
    assert verified.security_token == STS.security_token
    assert "SecurityToken" not in verified.params


@pytest.mark.parametrize("creds", [PLAIN, STS, AWKWARD_SECRET], ids=["plain", "sts", "awkward-secret"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_accepts_the_url_aliyun_sdk_core_signs(creds: Credentials, method: str) -> None:
    """The URL is decoded the way an HTTP server decodes it before verification (VISION-API.md §1, v1)."""
    params = {"Action": "SegmentCommonImage", "Version": "2019-12-30", **IMAGE}
    if creds.security_token:
        params["SecurityToken"] = creds.security_token
    url, _ = get_signed_url(params, creds.access_key_id, creds.access_key_secret, "JSON", method, {})
    query = dict(parse_qsl(url.split("?", 1)[1], keep_blank_values=True))

    verified = verify_request(
        method, "/", query, {}, b"", lookup, nonces=NonceCache(), now=_stamp_time(query["Timestamp"])
    )

    assert verified.params["ImageURL"] == IMAGE["ImageURL"]
    assert verified.security_token == creds.security_token


def test_accepts_v1_parameters_sent_as_a_form_body() -> None:
    params = sign_v1("POST", {"Action": "SegmentBody", **IMAGE}, PLAIN, now=FIXED_NOW, nonce="n-form").params
    body = urlencode(params).encode()

    verified = verify_request(
        "POST",
        "/",
        {},
        {"Content-Type": FORM + "; charset=UTF-8"},
        body,
        lookup,
        nonces=NonceCache(),
        now=FIXED_NOW,
    )

    assert verified.params["Action"] == "SegmentBody"
    assert verified.params["ImageURL"] == IMAGE["ImageURL"]


def test_header_names_are_case_insensitive() -> None:
    query, headers, body = v3_request()
    shouted = {name.upper(): value for name, value in headers.items()}

    assert verify_v3(query, shouted, body).params["Action"] == "SegmentCommonImage"


# ------------------------------------------------------------------ refusals, v1


def test_v1_refuses_a_tampered_parameter() -> None:
    """Spec section 1: the signature covers every parameter except Signature."""
    query = v1_request()
    query["ImageURL"] = "http://bucket.oss-cn-shanghai.aliyuncs.com/in/other.jpg"

    error = refused("SignatureDoesNotMatch", lambda: verify_v1(query))

    assert error.http_status == 400
    assert isinstance(error, SignatureMismatchError)
    assert "other.jpg" in error.server_string_to_sign


def test_v1_refuses_an_added_parameter() -> None:
    query = {**v1_request(), "RegionId": "cn-hangzhou"}

    refused("SignatureDoesNotMatch", lambda: verify_v1(query))


def test_v1_refuses_a_wrong_secret() -> None:
    query = v1_request(Credentials(PLAIN.access_key_id, "not-the-secret"))

    refused("SignatureDoesNotMatch", lambda: verify_v1(query))


@pytest.mark.parametrize("offset", [timedelta(minutes=16), -timedelta(minutes=16)], ids=["future", "past"])
def test_v1_refuses_a_timestamp_more_than_15_minutes_off(offset: timedelta) -> None:
    """Spec section 1: Timestamp more than 15 minutes off -> InvalidTimeStamp.Expired."""
    query = v1_request(now=FIXED_NOW + offset)

    error = refused("InvalidTimeStamp.Expired", lambda: verify_v1(query))

    assert error.http_status == 400


@pytest.mark.parametrize("offset", [timedelta(minutes=15), -timedelta(minutes=15)], ids=["future", "past"])
def test_v1_accepts_a_timestamp_exactly_15_minutes_off(offset: timedelta) -> None:
    """Spec section 1: the limit is "more than 15 minutes"; 15 minutes exactly is still fine."""
    assert verify_v1(v1_request(now=FIXED_NOW + offset)).access_key_id == PLAIN.access_key_id


def test_v1_refuses_a_reused_nonce_within_15_minutes() -> None:
    """Spec section 1: SignatureNonce must not repeat within 15 minutes -> SignatureNonceUsed."""
    nonces = NonceCache()
    verify_v1(v1_request(nonce="same"), nonces=nonces)
    replay = v1_request(nonce="same", now=FIXED_NOW + timedelta(minutes=5))

    refused(
        "SignatureNonceUsed", lambda: verify_v1(replay, nonces=nonces, now=FIXED_NOW + timedelta(minutes=5))
    )


def test_v1_refuses_an_unknown_access_key_with_404() -> None:
    query = v1_request(Credentials("LTAI5tNobodyKnowsMe", "whatever"))

    error = refused("InvalidAccessKeyId.NotFound", lambda: verify_v1(query))

    assert error.http_status == 404


@pytest.mark.parametrize("missing", ["AccessKeyId", "SignatureNonce", "Timestamp", "SignatureMethod"])
def test_v1_refuses_a_missing_protocol_parameter(missing: str) -> None:
    query = v1_request()
    del query[missing]

    error = refused("MissingParameter", lambda: verify_v1(query))

    assert missing in str(error)


def test_v1_refuses_another_signature_method() -> None:
    query = {**v1_request(), "SignatureMethod": "HMAC-SHA256"}

    refused("IncompleteSignature", lambda: verify_v1(query))


def test_v1_refuses_a_malformed_timestamp() -> None:
    query = {**v1_request(), "Timestamp": "2026-11-22 03:04:05"}

    refused("InvalidTimeStamp.Format", lambda: verify_v1(query))


def test_a_refused_signature_does_not_use_up_the_nonce() -> None:
    nonces = NonceCache()
    forged = {**v1_request(nonce="once"), "Signature": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}
    refused("SignatureDoesNotMatch", lambda: verify_v1(forged, nonces=nonces))

    assert verify_v1(v1_request(nonce="once"), nonces=nonces).access_key_id == PLAIN.access_key_id


def test_unsigned_request_is_refused() -> None:
    refused("MissingParameter", lambda: verify_v1({"Action": "SegmentBody", **IMAGE}))


# ------------------------------------------------------------------ refusals, v3


def test_v3_refuses_a_tampered_query_parameter() -> None:
    query, headers, body = v3_request()
    query["ReturnForm"] = "whiteBK"

    refused("SignatureDoesNotMatch", lambda: verify_v3(query, headers, body))


def test_v3_refuses_a_tampered_signed_header() -> None:
    query, headers, body = v3_request()
    headers["x-acs-action"] = "SegmentBody"

    refused("SignatureDoesNotMatch", lambda: verify_v3(query, headers, body))


def test_v3_refuses_a_body_that_does_not_match_its_hash() -> None:
    query, headers, _ = v3_request(body=b"ImageURL=http%3A%2F%2Fh%2Fa.jpg")
    swapped = b"ImageURL=http%3A%2F%2Fh%2Fb.jpg"

    error = refused("SignatureDoesNotMatch", lambda: verify_v3(query, headers, swapped))

    assert "x-acs-content-sha256" in str(error)


def test_v3_refuses_a_wrong_secret() -> None:
    query, headers, body = v3_request(Credentials(PLAIN.access_key_id, "not-the-secret"))

    refused("SignatureDoesNotMatch", lambda: verify_v3(query, headers, body))


@pytest.mark.parametrize("offset", [timedelta(minutes=16), -timedelta(minutes=16)], ids=["future", "past"])
def test_v3_refuses_an_x_acs_date_more_than_15_minutes_off(offset: timedelta) -> None:
    """Spec section 1: more than 15 minutes off -> InvalidTimeStamp.Expired (x-acs-date for v3)."""
    query, headers, body = v3_request(now=FIXED_NOW + offset)

    refused("InvalidTimeStamp.Expired", lambda: verify_v3(query, headers, body))


def test_v3_refuses_a_reused_nonce() -> None:
    """Spec section 1: a nonce must not repeat within 15 minutes -> SignatureNonceUsed."""
    nonces = NonceCache()
    verify_v3(*v3_request(nonce="v3-once"), nonces=nonces)

    refused("SignatureNonceUsed", lambda: verify_v3(*v3_request(nonce="v3-once"), nonces=nonces))


def test_v3_refuses_a_replayed_official_request() -> None:
    """Spec section 1: the very same official request sent twice reuses its nonce."""
    captured = capture_official_rpc_call(PLAIN, query=IMAGE)
    nonces = NonceCache()
    verify_captured(captured, nonces=nonces)

    refused("SignatureNonceUsed", lambda: verify_captured(captured, nonces=nonces))


def test_v3_refuses_an_unknown_access_key_with_404() -> None:
    query, headers, body = v3_request(Credentials("LTAI5tNobodyKnowsMe", "whatever"))

    error = refused("InvalidAccessKeyId.NotFound", lambda: verify_v3(query, headers, body))

    assert error.http_status == 404


@pytest.mark.parametrize("missing", ["x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"])
def test_v3_refuses_a_missing_mandatory_header(missing: str) -> None:
    query, headers, body = v3_request()
    del headers[missing]

    refused("MissingParameter", lambda: verify_v3(query, headers, body))


@pytest.mark.parametrize(
    "authorization",
    [
        "ACS3-HMAC-SHA256 Credential=LTAI5tTestKeyId,Signature=00",
        "ACS3-HMAC-SHA256 SignedHeaders=host,Signature=00",
        "ACS3-HMAC-SHA256 Credential=LTAI5tTestKeyId,SignedHeaders=host",
        "ACS3-HMAC-SM3 Credential=LTAI5tTestKeyId,SignedHeaders=host,Signature=00",
    ],
    ids=["no-signed-headers", "no-credential", "no-signature", "other-algorithm"],
)
def test_v3_refuses_an_incomplete_authorization(authorization: str) -> None:
    query, headers, body = v3_request()
    headers["Authorization"] = authorization

    refused("IncompleteSignature", lambda: verify_v3(query, headers, body))


def test_v3_refuses_an_x_acs_header_that_was_not_signed() -> None:
    """A client must sign the headers the server acts on: an unsigned x-acs-action could be swapped."""
    query, headers, body = v3_request()
    headers["Authorization"] = headers["Authorization"].replace("x-acs-action;", "")

    refused("IncompleteSignature", lambda: verify_v3(query, headers, body))


def test_v3_verifies_whatever_header_list_the_client_signed() -> None:
    """A minimal client that signs only what the server requires is accepted."""
    body = b""
    headers = {
        "host": HOST,
        "x-acs-action": "SegmentHair",
        "x-acs-version": "2019-12-30",
        "x-acs-date": "2026-11-22T03:04:05Z",
        "x-acs-signature-nonce": "minimal",
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
    }
    names = sorted(h for h in headers if h.startswith("x-acs-"))
    canonical = v3_canonical_request("POST", "/", IMAGE, headers, names, headers["x-acs-content-sha256"])
    signature = v3_signature(v3_string_to_sign(canonical), PLAIN.access_key_secret)
    headers["Authorization"] = (
        f"ACS3-HMAC-SHA256 Credential={PLAIN.access_key_id},"
        f"SignedHeaders={';'.join(names)},Signature={signature}"
    )

    verified = verify_v3(dict(IMAGE), headers, body)

    assert verified.params["Action"] == "SegmentHair"


# ------------------------------------------------------------------ secrets stay secret


@pytest.mark.parametrize("version", ["v1", "v3"])
def test_refusals_never_show_the_secret_or_the_expected_signature(version: str) -> None:
    creds = STS
    wrong = Credentials(creds.access_key_id, "wrong-secret", creds.security_token)
    if version == "v1":
        query = v1_request(wrong)
        expected = v1_request(creds)["Signature"]
        call: Callable[[], object] = lambda: verify_v1(query)  # noqa: E731
    else:
        query, headers, body = v3_request(wrong)
        expected = v3_request(creds)[1]["Authorization"].rsplit("Signature=", 1)[1]
        call = lambda: verify_v3(query, headers, body)  # noqa: E731

    error = refused("SignatureDoesNotMatch", call)

    text = f"{error} {error.message} {error.to_record()} {error!r}"
    assert creds.access_key_secret not in text
    assert expected not in text
    assert creds.security_token not in text
    assert isinstance(error, SignatureMismatchError)
    assert creds.access_key_secret not in error.server_string_to_sign
    assert creds.security_token is not None
    assert creds.security_token[:20] not in error.server_string_to_sign
