"""No encoding of a secret reaches a log line: raw, percent-encoded once or twice, `+` for space or not.

GIVEN STS credentials (an OSS presigned URL then carries `security-token=` and `Signature=`, themselves
percent-encoded: OSS docs, "Add signatures to URLs") and every logger at DEBUG
WHEN that URL goes to imageseg as `ImageURL` in a v1 (GET and POST) and a v3 request, so urllib3 logs the
request line with the URL encoded once more (`Signature%3D…`, `%252B`), the service refuses one call
echoing what it was sent, and segflow logs the URL and the refusal in several encodings
THEN no form of the URL's signature, the STS token, the AccessKey secret or a request signature appears
in any captured line, whether the handlers' redaction is installed or only the client's urllib3 filter
runs; the AccessKey ID (an identifier, not a credential) and the rest of the URL stay readable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlsplit

import oss2
import pytest

from segflow import logs
from segflow.client import Endpoints, VisionClient
from segflow.errors import ApiError
from segflow.retry import RetryPolicy
from segflow.signing import Credentials
from segflow.storage.oss import OssStorage
from tests.support.fake_api import FakeApi, RecordedRequest, Reply

# Shaped like real STS credentials: base64 with `+`, `/` and `=`, which every encoding changes.
STS = Credentials(
    "STS.NUgYrLnoC37mZZCNnAbez2BVp",
    "8Tz+Vd/4q3pLm9Wx=Kf2Rb7Ye1Nc0Ua5Hs6J",
    "CAIS+gF1q6Ft5B2yfSjIr5bSEtb2gK1Hg4iDc0ncqVkRTrZm/qKjZgDz2IHhMeXZrAuoWsPU1mGhZ7Ps+TlrRZ/6GgABk1Qe==",
)
KEY = "incoming/照片 a+b.jpg"


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
    }


@pytest.fixture
def fresh_logging() -> Iterator[None]:
    """No redaction installed by an earlier test; whatever this test installs is undone after."""
    factory, installed = logging.getLogRecordFactory(), logs._installed
    logging.setLogRecordFactory(logging.LogRecord)
    logs._installed = None
    yield
    logging.setLogRecordFactory(factory)
    logs._installed = installed


def presigned_input() -> str:
    """What on_upload hands the service for an OSS object, under FC's STS credentials."""
    auth = oss2.StsAuth(STS.access_key_id, STS.access_key_secret, STS.security_token)
    storage = OssStorage("segflow-demo", "https://oss-cn-shanghai.aliyuncs.com", auth)
    return storage.presign_get(KEY, 1800)


def echo_refusal(request: RecordedRequest) -> Reply:
    """Like imageseg's InvalidParameter messages, which quote the URL parameter they got."""
    return Reply.error(400, "InvalidImage.Download", f"cannot download ImageURL={request.params['ImageURL']}")


@pytest.mark.parametrize("installed", [True, False], ids=["handler redaction", "client filter only"])
def test_no_encoding_of_a_secret_in_debug_logs(
    installed: bool, fresh_logging: None, caplog: pytest.LogCaptureFixture
) -> None:
    url = presigned_input()
    query = parse_qs(urlsplit(url).query)
    assert query["security-token"] == [STS.security_token] and "%2B" in url  # OSS encoded them
    if installed:
        logs.install_redaction([STS.access_key_secret, STS.security_token or ""])
    caplog.set_level(logging.DEBUG)
    logger = logging.getLogger("segflow.services.upload")
    with FakeApi(secrets={STS.access_key_id: STS.access_key_secret}) as api:
        api.set_handler(lambda request: Reply.ok({"ImageURL": "https://result.example/a.png"}))
        endpoints = Endpoints(imageseg=api.url, videoseg=api.url)
        for version, method in (("v1", "GET"), ("v1", "POST"), ("v3", "POST")):
            client = VisionClient(
                STS, endpoints=endpoints, signature_version=version, v1_method=method,
                retry=RetryPolicy(max_attempts=1),
            )  # fmt: skip
            client.segment("SegmentCommonImage", url)
            api.set_handler(echo_refusal)
            with pytest.raises(ApiError) as refused:
                client.segment("SegmentCommonImage", url)
            logger.warning("refused: %s", refused.value)
            api.set_handler(lambda request: Reply.ok({"ImageURL": "https://result.example/a.png"}))
        for name, text in forms(url).items():
            logger.debug("input URL (%s): %s", name, text)
        requests_seen = list(api.requests)

    lines = [record.getMessage() for record in caplog.records]
    lines += [logging.Formatter().format(record) for record in caplog.records]
    urllib3_lines = [r.getMessage() for r in caplog.records if r.name.startswith("urllib3")]
    assert any("ImageURL=" in line for line in urllib3_lines), "urllib3 logged no request line"
    secrets = {
        "URL signature": unquote(query["Signature"][0]),
        "STS token": STS.security_token or "",
        "AccessKey secret": STS.access_key_secret,
    }
    for n, request in enumerate(requests_seen):
        if request.params.get("Signature"):
            secrets[f"v1 signature {n}"] = request.params["Signature"]
        match = re.search(r"Signature=([0-9a-fA-F]+)", request.headers.get("authorization", ""))
        if match:
            secrets[f"v3 signature {n}"] = match.group(1)
    assert len(secrets) >= 3 + 6
    leaks = [
        f"{what} ({form}) in: {line[:200]}"
        for what, value in secrets.items()
        for form, needle in forms(value).items()
        for line in lines
        if needle in line
    ]
    assert not leaks, leaks[:5]
    kept = "\n".join(lines)
    assert STS.access_key_id in kept and "segflow-demo.oss-cn-shanghai.aliyuncs.com" in kept


@pytest.mark.parametrize(
    ("value", "level"),
    [("debug", logging.DEBUG), ("WARNING", logging.WARNING), ("", logging.INFO)],
    ids=["debug", "warning", "unset"],
)
def test_the_functions_log_at_segflow_log_level(value: str, level: int) -> None:
    """`SEGFLOW_LOG_LEVEL` (issue 15 §4) is read once, with the rest of the settings, when a warm instance
    builds its deps; unset, the functions log from INFO up, as before."""
    from segflow.services.deps import handler_deps, use_handler_deps

    logger = logging.getLogger("segflow")
    saved = logger.level
    environ = {
        "SEGFLOW_LOG_LEVEL": value,
        "ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAI-x",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "y" * 30,
    }
    use_handler_deps(None)
    try:
        deps = handler_deps(None, environ)
        assert logger.level == level and deps.settings.log_level == logging.getLevelName(level)
    finally:
        use_handler_deps(None)
        logger.setLevel(saved)
