"""segflow's OSS storage with the real oss2 client against a loopback OSS (tests/support/oss_server.py).

GIVEN an OSS server on 127.0.0.1 that checks OSS's V1 signatures (header and presigned URL) and answers as
      OSS's API reference documents (PutObject, GetObject with ranges, HeadObject, DeleteObject,
      ListObjectsV2, multipart uploads)
WHEN  `OssStorage` runs the storage contract every adapter passes, with a long-term key and with an STS key
      (what a function's role gets)
THEN  every promise holds over real HTTP, and a presigned URL that expired or was tampered with is refused.
This is where the engine on Function Compute keeps its results; under `make test-fc` it runs with FC's
built-in oss2 2.16.0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import oss2
import pytest
import requests

from segflow.storage.oss import OssStorage
from tests.support.oss_server import OssServer
from tests.support.storage_contract import StorageContract, payload

BUCKET = "segflow-demo"
PLAIN = ("LTAI5tLoopbackKey01", "loopback-secret-0123456789")
STS = ("STS.NLoopbackKey02", "sts-loopback-secret", "CAIS+loopback/token=")


@pytest.fixture(scope="module")
def oss() -> Iterator[OssServer]:
    with OssServer({PLAIN[0]: PLAIN[1], STS[0]: (STS[1], STS[2])}, buckets=(BUCKET,)) as server:
        yield server


@pytest.fixture(params=["plain", "sts"])
def auth(request: pytest.FixtureRequest) -> Any:
    if request.param == "plain":
        return oss2.Auth(*PLAIN)
    return oss2.StsAuth(*STS)


@pytest.fixture
def storage(oss: OssServer, auth: Any) -> Iterator[OssStorage]:
    store = OssStorage(BUCKET, oss.endpoint, auth)
    yield store
    for info in list(store.list("")):  # each test starts from an empty bucket
        store.delete(info.key)


@pytest.fixture
def fetch_presigned() -> Callable[[str], bytes]:
    def fetch(url: str) -> bytes:
        response = requests.get(url, timeout=10)
        if response.status_code != 200:
            raise AssertionError(f"presigned GET refused: {response.status_code} {response.text}")
        return response.content

    return fetch


class TestOssStorageOverLoopbackOss(StorageContract):
    """The shared contract, over HTTP against the loopback OSS."""


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()} | changes
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_a_presigned_url_is_refused_once_expired_or_changed(storage: OssStorage) -> None:
    storage.put_bytes("segflow-engine/results/a.png", payload(64))
    url = storage.presign_get("segflow-engine/results/a.png", 1800)
    assert requests.get(url, timeout=10).content == payload(64)
    expired = _with_query(url, Expires=str(int(time.time()) - 1))
    assert requests.get(expired, timeout=10).status_code == 403
    other_key = url.replace("/a.png", "/b.png")
    refused = requests.get(other_key, timeout=10)
    assert refused.status_code == 403 and b"<Code>SignatureDoesNotMatch</Code>" in refused.content


def test_a_request_signed_with_a_wrong_secret_is_refused(oss: OssServer) -> None:
    wrong = OssStorage(BUCKET, oss.endpoint, oss2.Auth(PLAIN[0], "not-the-secret"))
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        wrong.put_bytes("segflow-engine/x", b"x")
    assert "segflow-engine/x" not in oss.objects(BUCKET)
