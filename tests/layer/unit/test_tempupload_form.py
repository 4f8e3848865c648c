"""The upload path's pieces without a network: where the temporary bucket is addressed, the grant an
AuthorizeFileUpload answer must carry, and the form body (its length, its laziness, and that the engine's
PostObject parser — which encodes OSS's PostObject rules — takes it)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from segflow.errors import ApiError, StorageError
from segflow.tempupload import MultipartBody, TempAddress, UploadGrant, form_fields, temp_address
from segflow_engine.tempstore import TEMP_BUCKET, TempBucket

CHUNK = 64 * 1024


def _grant(endpoint: str = "oss-cn-shanghai.aliyuncs.com", key: str = "ab12/cd34.bin") -> UploadGrant:
    return UploadGrant("viapi-customer-temp", endpoint, key, "LTAItemp", "cG9saWN5", "c2ln", "REQ")


# -- addressing ------------------------------------------------------------------------------------------


def test_a_real_endpoint_is_addressed_as_the_sdk_does() -> None:
    """The SDK POSTs to https://<Bucket>.<Endpoint> and hands the action http://<Bucket>.<Endpoint>/<key>."""
    address = temp_address(_grant(), "https")
    assert address == TempAddress(
        "https://viapi-customer-temp.oss-cn-shanghai.aliyuncs.com/",
        "viapi-customer-temp.oss-cn-shanghai.aliyuncs.com",
        "http://viapi-customer-temp.oss-cn-shanghai.aliyuncs.com/ab12/cd34.bin",
    )


@pytest.mark.parametrize(
    ("endpoint", "scheme"),
    [("127.0.0.1:8780", "http"), ("localhost:8780", "http"), ("[::1]:8780", "http"), ("10.0.0.7", "https")],
)
def test_an_ip_or_localhost_endpoint_is_addressed_path_style_with_the_openplatform_scheme(
    endpoint: str, scheme: str
) -> None:
    """No resolver knows `viapi-customer-temp.127.0.0.1`: the bucket goes into the path instead."""
    address = temp_address(_grant(endpoint), scheme)
    assert address.post_url == f"{scheme}://{endpoint}/viapi-customer-temp/"
    assert address.host == endpoint
    assert address.object_url == f"{scheme}://{endpoint}/viapi-customer-temp/ab12/cd34.bin"


def test_an_object_key_is_pasted_in_as_the_platform_wrote_it_unless_it_cannot_be_a_path() -> None:
    assert temp_address(_grant(key="a/b-c_d.~!$'()*+,;=:@.png")).object_url.endswith(
        "/a/b-c_d.~!$'()*+,;=:@.png"
    )
    assert temp_address(_grant(key="a/b c%?#.png")).object_url.endswith("/a/b%20c%25%3F%23.png")


def test_the_form_fields_are_sorted_by_name_as_the_sdk_writes_them() -> None:
    grant = _grant()
    names = [name for name, _ in form_fields(grant, temp_address(grant))]
    assert names == ["OSSAccessKeyId", "Signature", "host", "key", "policy", "success_action_status"]


def test_a_grant_signed_with_an_sts_key_sends_its_token_in_the_form() -> None:
    """OSS "PostObject": a policy signed with an STS key needs `x-oss-security-token` in the form (OSS error
    0002-00000003 otherwise). The engine on Function Compute signs its grants with its role's STS key and
    says so in `SecurityToken`; the service's own grants carry none, and their forms stay as they were."""
    document = {
        "RequestId": "R",
        "Bucket": "segflow-demo",
        "Endpoint": "oss-cn-shanghai-internal.aliyuncs.com",
        "ObjectKey": "segflow-engine/temp/ab/cd",
        "AccessKeyId": "STS.NEngine",
        "EncodedPolicy": "cG9saWN5",
        "Signature": "c2ln",
        "SecurityToken": "CAIS+engine/token=",
    }
    grant = UploadGrant.from_document(document)
    fields = dict(form_fields(grant, temp_address(grant)))
    assert (
        fields["x-oss-security-token"] == "CAIS+engine/token=" and fields["OSSAccessKeyId"] == "STS.NEngine"
    )
    assert list(fields)[-1] == "x-oss-security-token"  # sorted by name, as the SDK writes them
    without = UploadGrant.from_document({k: v for k, v in document.items() if k != "SecurityToken"})
    assert "x-oss-security-token" not in dict(form_fields(without, temp_address(without)))


@pytest.mark.parametrize(
    "missing", ["Bucket", "Endpoint", "ObjectKey", "AccessKeyId", "EncodedPolicy", "Signature"]
)
def test_a_grant_without_a_field_is_an_invalid_response(missing: str) -> None:
    document = {
        "RequestId": "R",
        "Bucket": "b",
        "Endpoint": "e",
        "ObjectKey": "k",
        "AccessKeyId": "a",
        "EncodedPolicy": "p",
        "Signature": "s",
    }
    del document[missing]
    with pytest.raises(ApiError) as raised:
        UploadGrant.from_document(document)
    assert raised.value.code == "InvalidResponse" and missing in raised.value.message


def test_an_object_key_a_form_header_cannot_carry_is_refused() -> None:
    document = dict(
        zip(("Bucket", "Endpoint", "AccessKeyId", "EncodedPolicy", "Signature"), "beaps", strict=True)
    )
    with pytest.raises(ApiError, match="ObjectKey"):
        UploadGrant.from_document({**document, "ObjectKey": 'a"b'})


# -- the body --------------------------------------------------------------------------------------------


class CountingChunks:
    """A storage stream that counts the chunks it has produced."""

    def __init__(self, count: int, size: int = CHUNK) -> None:
        self.count, self.size, self.produced = count, size, 0

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.count):
            self.produced += 1
            yield bytes([index % 251]) * self.size


def _body(chunks: Iterator[bytes], size: int) -> MultipartBody:
    grant = _grant()
    return MultipartBody(form_fields(grant, temp_address(grant)), grant.object_key, chunks, size)


def _read_all(body: MultipartBody, block: int = 8192) -> bytes:
    out = bytearray()
    while piece := body.read(block):
        out += piece
    return bytes(out)


def test_the_declared_length_is_the_length_sent() -> None:
    chunks = CountingChunks(5, 1000)
    body = _body(iter(chunks), 5000)
    assert len(_read_all(body)) == len(body)


def test_the_body_holds_one_chunk_at_a_time() -> None:
    """http.client reads the body 8 KiB at a time: a chunk is only taken from storage once the one before
    has been read out, so a 1 GB video never sits in memory."""
    chunks = CountingChunks(64)
    body = _body(iter(chunks), 64 * CHUNK)
    read = 0
    most_ahead = 0
    while piece := body.read(8192):
        read += len(piece)
        most_ahead = max(most_ahead, chunks.produced - read // CHUNK)
    assert chunks.produced == 64 and read == len(body)
    assert most_ahead <= 1


@pytest.mark.parametrize(("produced", "declared"), [(3, 4 * 1000), (5, 4 * 1000)])
def test_an_object_that_changed_under_the_upload_fails_the_attempt(produced: int, declared: int) -> None:
    body = _body(iter(CountingChunks(produced, 1000)), declared)
    with pytest.raises(StorageError) as raised:
        _read_all(body)
    assert raised.value.code == "ObjectChanged"


def test_the_engines_postobject_parser_takes_the_body(tmp_path: Path) -> None:
    """Round trip through the engine's temporary bucket: a real grant, our body, its checks."""
    bucket = TempBucket(tmp_path, "127.0.0.1:8780")
    grant = UploadGrant.from_document({"RequestId": "R", **bucket.grant("imageseg")})
    data = bytes(range(256)) * 300
    fields = form_fields(grant, temp_address(grant, "http"))
    body = MultipartBody(fields, grant.object_key, iter([data[:10_000], data[10_000:]]), len(data))
    answer, close = bucket.receive(
        {"content-type": body.content_type}, io.BytesIO(_read_all(body)), len(body)
    )
    assert (answer.status, close) == (201, False), answer.body
    stored = bucket.object_path(f"/{TEMP_BUCKET}/{grant.object_key}")
    assert stored is not None and stored.read_bytes() == data
