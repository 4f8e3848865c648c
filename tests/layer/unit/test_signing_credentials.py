"""Credentials never show their secret or STS token (issue 2: secrets never in logs or exception text)."""

from __future__ import annotations

import logging

import pytest

from segflow.signing import Credentials, sign_v1, sign_v3
from tests.support.signing_cases import FIXED_NONCE, FIXED_NOW, STS


def test_repr_and_str_hide_the_secret_and_the_token() -> None:
    text = f"{STS!r} {STS!s} {[STS]}"

    assert STS.access_key_id in text
    assert STS.access_key_secret not in text
    assert STS.security_token is not None
    assert STS.security_token not in text
    assert "security_token=<set>" in text


def test_repr_says_when_there_is_no_token() -> None:
    assert "security_token=<none>" in repr(Credentials("AK", "SK"))


def test_logging_credentials_does_not_leak(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("segflow.test").info("using %s", STS)

    assert STS.access_key_secret not in caplog.text


def test_sts_v1_signs_the_security_token_as_a_parameter() -> None:
    """Spec section 1: with STS credentials the request also carries SecurityToken (signed)."""
    signed = sign_v1("GET", {"Action": "SegmentBody"}, STS, now=FIXED_NOW, nonce=FIXED_NONCE)

    assert signed.params["SecurityToken"] == STS.security_token
    assert "SecurityToken" in signed.string_to_sign


def test_sts_v3_signs_the_security_token_header() -> None:
    signed = sign_v3("POST", "h", "SegmentBody", "2019-12-30", {}, b"", STS, now=FIXED_NOW, nonce=FIXED_NONCE)

    assert signed.headers["x-acs-security-token"] == STS.security_token
    assert "x-acs-security-token" in signed.headers["Authorization"].split("SignedHeaders=")[1].split(",")[0]


def test_v1_adds_the_protocol_parameters_and_keeps_a_given_format() -> None:
    """Spec section 1: Format, AccessKeyId, SignatureMethod, SignatureVersion, SignatureNonce, Timestamp."""
    signed = sign_v1("GET", {"Action": "A", "Format": "XML"}, STS, now=FIXED_NOW, nonce="n-1")

    assert signed.params["Format"] == "XML"
    assert signed.params["AccessKeyId"] == STS.access_key_id
    assert signed.params["SignatureMethod"] == "HMAC-SHA1"
    assert signed.params["SignatureVersion"] == "1.0"
    assert signed.params["SignatureNonce"] == "n-1"
    assert signed.params["Timestamp"] == "2026-11-22T03:04:05Z"
    assert signed.string_to_sign.startswith("GET&%2F&")


def test_default_nonces_differ_between_calls() -> None:
    first = sign_v1("GET", {"Action": "A"}, STS, now=FIXED_NOW)
    second = sign_v1("GET", {"Action": "A"}, STS, now=FIXED_NOW)

    assert first.params["SignatureNonce"] != second.params["SignatureNonce"]
    assert first.signature != second.signature
