"""Record-outcome log lines and redaction of secrets from every log record."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest

from segflow import logs
from segflow.logs import RedactingFilter, install_redaction, log_outcome, outcome_line, redact

AK_SECRET = "kX9vQ2mN7pL4sT8wZ1yB3cD5fG6hJ0"
STS_TOKEN = "CAIS8gF1q6Ft5B2yfSjIr5bSEtb2gK1Hg4iDc0ncqVkRTrZmqKjZgDz2IHhMeXZrAuoWsPU1mGhZ7PsTlrRZ"


def test_outcome_line_has_the_standard_fields_first_and_utf8_keys() -> None:
    line = outcome_line(
        outcome="submitted",
        bucket="segflow-demo",
        key="incoming/猫咪 照片.jpg",
        action="SegmentCommonImage",
        request_id="8D7A2C",
        ms=123.456,
        record=0,
    )
    data = json.loads(line)
    assert list(data) == ["bucket", "key", "action", "outcome", "code", "request_id", "ms", "record"]
    assert data["key"] == "incoming/猫咪 照片.jpg" and "猫咪" in line  # readable in the FC log service
    assert data["code"] is None and data["ms"] == 123.5
    assert "\n" not in line


def test_log_outcome_writes_one_json_line(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("segflow.test.outcome")
    with caplog.at_level(logging.INFO, logger="segflow.test.outcome"):
        log_outcome(
            logger, bucket="b", key="k", action="SegmentBody", outcome="failed", code="InvalidFile.Region"
        )
    (record,) = caplog.records
    assert json.loads(record.getMessage())["code"] == "InvalidFile.Region"


@pytest.mark.parametrize(
    ("text", "leaked"),
    [
        ("GET /?Action=SegmentBody&Signature=abc%2Bdef%3D&SignatureNonce=1", "abc%2Bdef%3D"),
        (
            "Authorization: ACS3-HMAC-SHA256 Credential=LTAI5tAbc,SignedHeaders=host;x-acs-date,"
            "Signature=0f1e2d3c4b5a",
            "0f1e2d3c4b5a",
        ),
        ("{'Authorization': 'OSS STS.AKID:zXK96upnrOezc', 'Date': 'x'}", "zXK96upnrOezc"),
        ("https://b.oss-cn-shanghai.aliyuncs.com/k?security-token=CAISabc&Expires=1&Signature=Zm9v", "Zm9v"),
        ("SecurityToken=CAIStokenvalue&Format=JSON", "CAIStokenvalue"),
        ("x-acs-security-token: CAIShdrvalue", "CAIShdrvalue"),
        ("credentials(access_key_secret='hunter2secret')", "hunter2secret"),
        ('{"AccessKeySecret": "s3cr3tvalue"}', "s3cr3tvalue"),
        ("Authorization: APPCODE 0123456789abcdef", "0123456789abcdef"),
        (f"token in a traceback: {STS_TOKEN}", STS_TOKEN[8:40]),
    ],
)
def test_redact_removes_signatures_tokens_and_authorization(text: str, leaked: str) -> None:
    cleaned = redact(text)
    assert leaked not in cleaned
    assert logs.MASK in cleaned


def forms(value: str) -> dict[str, str]:
    """Every way a value is written into a URL, a query inside a query, or a form."""
    once = quote(value, safe="")
    return {
        "raw": value,
        "quote": once,
        "quote safe=/": quote(value),
        "quote twice": quote(once, safe=""),
        "quote_plus": quote_plus(value),
        "quote_plus twice": quote_plus(quote_plus(value)),
        "lower-case hex": re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), once),
        "JSON slash": value.replace("/", "\\/"),
    }


ENCODED_SECRETS = {
    "AccessKey secret": "8Tz+Vd/4q3pLm9Wx=Kf2 Rb7",
    "STS token": "CAIS+gF1q6Ft5B2yfSjIr5b/SEtb2gK1Hg4i==",
    "AppCode": "appcode 照片/+=",
}


@pytest.mark.parametrize("what", list(ENCODED_SECRETS))
@pytest.mark.parametrize("form", list(forms("x")))
def test_known_secret_values_are_masked_in_every_encoding(what: str, form: str) -> None:
    secret = ENCODED_SECRETS[what]
    needle = forms(secret)[form]
    cleaned = redact(f"unnamed context <{needle}> end", ENCODED_SECRETS.values())
    assert needle not in cleaned and cleaned == f"unnamed context <{logs.MASK}> end"


def test_redact_removes_known_secret_values_anywhere() -> None:
    assert AK_SECRET not in redact(f"weird place {AK_SECRET}!", [AK_SECRET])
    assert redact("nothing here", [AK_SECRET]) == "nothing here"


def test_short_values_are_not_treated_as_secrets() -> None:
    assert redact("a b c", ["a", ""]) == "a b c"


def test_filter_redacts_args_and_tracebacks() -> None:
    redactor = RedactingFilter([AK_SECRET])
    try:
        raise RuntimeError(f"failed with secret {AK_SECRET}")
    except RuntimeError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "key %s url %s", (AK_SECRET, "u?Signature=x1"), sys.exc_info()
        )
    assert redactor.filter(record) is True
    assert AK_SECRET not in record.getMessage() and "x1" not in record.getMessage()
    assert record.exc_text is not None and AK_SECRET not in record.exc_text


@pytest.fixture
def restore_logging() -> Iterator[None]:
    factory = logging.getLogRecordFactory()
    installed = logs._installed
    yield
    logging.setLogRecordFactory(factory)
    logs._installed = installed


@pytest.mark.usefixtures("restore_logging")
def test_install_redaction_covers_every_logger_and_later_secrets(caplog: pytest.LogCaptureFixture) -> None:
    logs._installed = None
    install_redaction([AK_SECRET])
    install_redaction([STS_TOKEN])
    with caplog.at_level(logging.INFO):
        logging.getLogger("urllib3.somewhere").info("sending %s and %s", AK_SECRET, STS_TOKEN)
        logging.getLogger("oss2.api").warning("url https://x/?OSSAccessKeyId=a&Signature=c2lnbmF0dXJl")
    text = caplog.text
    assert AK_SECRET not in text and STS_TOKEN not in text and "c2lnbmF0dXJl" not in text
    assert text.count(logs.MASK) >= 3


@pytest.mark.parametrize(
    "text",
    [
        "GET /?ImageURL=https%3A%2F%2Fb.oss.example%2Fk%3FExpires%3D1%26Signature%3D{sig}%26x%3D1 HTTP/1.1",
        "GET /?ImageURL=https%253A%252F%252Fb%253FSignature%253D{sig}%2526security-token%253D{tok} HTTP",
        '{{"Signature": "{sig}", "SecurityToken": "{tok}"}}',
        "x-oss-security-token: {tok}\nAuthorization: OSS STS.id:{sig}",
        "https://b.oss.example/k?security-token={tok}&OSSAccessKeyId=STS.id&Signature={sig}",
        "form body Signature={sig}&SecurityToken={tok}&AccessKeySecret={sec}",
    ],
)
@pytest.mark.parametrize("encode", ["raw", "quote", "quote_plus", "quote twice"])
def test_named_secrets_are_masked_in_every_encoding_without_knowing_them(text: str, encode: str) -> None:
    values = {"sig": "aB3+/xY=", "tok": "CAIS+gF1q6Ft5B2y/fSjIr5b==", "sec": "s3+cr/et=="}
    encoded = {name: forms(value)[encode] for name, value in values.items()}
    cleaned = logs.redact(text.format(**encoded))
    for name, value in values.items():
        for form, needle in forms(value).items():
            if needle in text.format(**encoded) and len(needle) > 4:
                assert needle not in cleaned, (name, form, cleaned)
    assert logs.MASK in cleaned


def test_the_cheap_pre_check_never_skips_a_text_the_named_patterns_would_change() -> None:
    """`redact` runs the named patterns only on a text holding one of `_TRIGGERS` (or `CAIS`): every
    secret name the patterns know, in every spelling they accept, holds a trigger; and a plain outcome
    line holds none, so it is returned as it is."""
    names = re.sub(r"\[-_\]\?", "", logs._SECRET_NAMES).split("|")
    spellings = {n for name in names for n in (name, name.upper(), name.title())}
    spellings |= {
        "Security-Token",
        "security_token",
        "Access-Key-Secret",
        "access_key_secret",
        "Authorization",
    }
    for spelling in spellings:
        assert logs._may_hold_named_secret(f"?{spelling}=value"), spelling
    assert logs._may_hold_named_secret("x CAIS" + "a" * 20)
    line = outcome_line(bucket="b", key="incoming/photo.jpg", action="SegmentCommonImage", outcome="done")
    assert not logs._may_hold_named_secret(line)
    assert redact(line) == line
