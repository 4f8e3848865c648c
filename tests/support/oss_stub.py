"""The stubbed `oss2.Bucket` of the storage tests, for tests of other commands that talk to OSS.

`stub_oss(mocker)` makes every `oss2.Bucket(...)` the in-memory `FakeOssBucket` below
(one per bucket name) and returns them by name. The fake keeps objects in memory and reproduces the OSS
behaviour the adapter depends on (tests/layer/unit/test_storage_oss.py checks it against the real oss2).
"""

from __future__ import annotations

import hashlib
import time
from types import SimpleNamespace
from typing import Any

import oss2
from pytest_mock import MockerFixture

from tests.support.storage_contract import PART, md5_upper


def stub_oss(mocker: MockerFixture) -> dict[str, FakeOssBucket]:
    buckets: dict[str, FakeOssBucket] = {}

    def make(auth: Any, endpoint: str, bucket_name: str, **kwargs: Any) -> FakeOssBucket:
        return buckets.setdefault(bucket_name, FakeOssBucket(auth, endpoint, bucket_name, **kwargs))

    mocker.patch("oss2.Bucket", side_effect=make)
    return buckets


REAL_BUCKET = oss2.Bucket
ENDPOINT = "https://oss-cn-shanghai.aliyuncs.com"
REQUEST_ID = "5C1B138A109F4E405B2D8AEF"
STS_SECRET = "sts-secret-value"


def _oss_error(cls: type[oss2.exceptions.OssError], status: int, code: str = "") -> oss2.exceptions.OssError:
    details = {"Code": code, "Message": f"fake {code or status}"} if code else {}
    return cls(status, {"x-oss-request-id": REQUEST_ID}, b"", details)


class FakeOssBucket:
    """In-memory OSS bucket with the real service's behaviour where the adapter relies on it."""

    def __init__(self, auth: Any, endpoint: str, bucket_name: str, **kwargs: Any) -> None:
        self.auth = auth
        self.endpoint = endpoint
        self.bucket_name = bucket_name
        self.objects: dict[str, tuple[bytes, str, int]] = {}
        self.uploads: dict[str, dict[int, bytes]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail_upload_part: Exception | None = None

    def _record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))

    def calls_to(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for call, kwargs in self.calls if call == name]

    def _store(self, key: str, data: bytes, etag: str) -> None:
        self.objects[key] = (data, etag, int(time.time()))

    def get_object(
        self, key, byte_range=None, headers=None, progress_callback=None, process=None, params=None
    ):  # type: ignore[no-untyped-def]
        self._record("get_object", key=key, byte_range=byte_range, headers=dict(headers or {}))
        if key not in self.objects:
            raise _oss_error(oss2.exceptions.NoSuchKey, 404, "NoSuchKey")
        data, etag, _ = self.objects[key]
        if byte_range is not None:
            first, last = byte_range
            standard = (headers or {}).get("x-oss-range-behavior") == "standard"
            if first >= len(data) or (last is not None and last >= len(data) and not standard):
                if standard:
                    raise _oss_error(oss2.exceptions.ServerError, 416, "InvalidRange")
                # Legacy OSS behaviour: an invalid range is ignored and the whole object comes back.
            else:
                data = data[first : (last + 1 if last is not None else None)]
        stream = _Stream(data)
        return SimpleNamespace(read=stream.read, content_length=len(data), etag=etag)

    def head_object(self, key, headers=None, params=None):  # type: ignore[no-untyped-def]
        self._record("head_object", key=key)
        if key not in self.objects:
            raise _oss_error(oss2.exceptions.NotFound, 404)  # HEAD has no body, so no code
        data, etag, mtime = self.objects[key]
        return SimpleNamespace(content_length=len(data), etag=etag, last_modified=mtime)

    def put_object(self, key, data, headers=None, progress_callback=None):  # type: ignore[no-untyped-def]
        headers = dict(headers or {})
        self._record("put_object", key=key, size=len(data), headers=headers)
        if headers.get("x-oss-forbid-overwrite") == "true" and key in self.objects:
            raise _oss_error(oss2.exceptions.ServerError, 409, "FileAlreadyExists")
        etag = md5_upper(bytes(data))
        self._store(key, bytes(data), etag)
        return SimpleNamespace(etag=etag, request_id=REQUEST_ID)

    def init_multipart_upload(self, key, headers=None, params=None):  # type: ignore[no-untyped-def]
        self._record("init_multipart_upload", key=key, headers=dict(headers or {}))
        upload_id = f"upload-{len(self.uploads) + 1}"
        self.uploads[upload_id] = {}
        return SimpleNamespace(upload_id=upload_id)

    def upload_part(self, key, upload_id, part_number, data, progress_callback=None, headers=None):  # type: ignore[no-untyped-def]
        self._record("upload_part", key=key, upload_id=upload_id, part_number=part_number, size=len(data))
        if self.fail_upload_part is not None:
            raise self.fail_upload_part
        self.uploads[upload_id][part_number] = bytes(data)
        return SimpleNamespace(etag=md5_upper(bytes(data)))

    def complete_multipart_upload(self, key, upload_id, parts, headers=None):  # type: ignore[no-untyped-def]
        numbers = [part.part_number for part in parts]
        self._record("complete_multipart_upload", key=key, upload_id=upload_id, part_numbers=numbers)
        stored = self.uploads.pop(upload_id)
        if numbers != list(range(1, len(parts) + 1)) or set(numbers) != set(stored):
            raise _oss_error(oss2.exceptions.ServerError, 400, "InvalidPartOrder")
        for part in parts:
            if part.etag != md5_upper(stored[part.part_number]):
                raise _oss_error(oss2.exceptions.ServerError, 400, "InvalidPart")
            if part.part_number < len(parts) and len(stored[part.part_number]) < PART:
                raise _oss_error(oss2.exceptions.ServerError, 400, "EntityTooSmall")
        data = b"".join(stored[n] for n in numbers)
        digest = hashlib.md5(b"".join(hashlib.md5(stored[n]).digest() for n in numbers))
        etag = f"{digest.hexdigest().upper()}-{len(parts)}"
        self._store(key, data, etag)
        return SimpleNamespace(etag=etag)

    def abort_multipart_upload(self, key, upload_id, headers=None):  # type: ignore[no-untyped-def]
        self._record("abort_multipart_upload", key=key, upload_id=upload_id)
        self.uploads.pop(upload_id, None)

    def list_objects_v2(  # type: ignore[no-untyped-def]
        self,
        prefix="",
        delimiter="",
        continuation_token="",
        start_after="",
        fetch_owner=False,
        encoding_type="url",
        max_keys=100,
        headers=None,
    ):
        self._record(
            "list_objects_v2",
            prefix=prefix,
            continuation_token=continuation_token,
            start_after=start_after,
            max_keys=max_keys,
        )
        after = continuation_token or start_after
        keys = sorted(k for k in self.objects if k.startswith(prefix) and k > after)
        page = keys[:max_keys]
        truncated = len(keys) > max_keys
        items = [
            SimpleNamespace(
                key=k, size=len(self.objects[k][0]), etag=self.objects[k][1], last_modified=self.objects[k][2]
            )
            for k in page
        ]
        return SimpleNamespace(
            object_list=items, is_truncated=truncated, next_continuation_token=page[-1] if truncated else ""
        )

    def delete_object(self, key, params=None, headers=None):  # type: ignore[no-untyped-def]
        self._record("delete_object", key=key)
        self.objects.pop(key, None)  # OSS answers 204 for a missing key too

    def sign_url(
        self, method, key, expires, headers=None, params=None, slash_safe=False, additional_headers=None
    ):  # type: ignore[no-untyped-def]
        self._record("sign_url", method=method, key=key, expires=expires, slash_safe=slash_safe)
        real = REAL_BUCKET(self.auth, self.endpoint, self.bucket_name)
        url: str = real.sign_url(method, key, expires, headers=headers, params=params, slash_safe=slash_safe)
        return url


class _Stream:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, amt: int | None = None) -> bytes:
        end = len(self._data) if amt is None else self._pos + amt
        block = self._data[self._pos : end]
        self._pos += len(block)
        return block


def fc_context(token: str | None = "CAIS-context-token-000000") -> Any:
    credentials = SimpleNamespace(
        access_key_id="STS.ctx", access_key_secret="ctx-secret", security_token=token
    )
    return SimpleNamespace(credentials=credentials, region="cn-shanghai")
