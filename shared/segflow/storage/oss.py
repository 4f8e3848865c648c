"""The OSS adapter, on oss2 (which the FC Python runtime ships). The only module that imports oss2.

What real OSS needs sits on the constant or method that does it (ranged reads, put-if-absent, multipart
uploads, listing pages, presigning for another host), and the contract suite checks each against a
stubbed `oss2.Bucket`.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn
from urllib.parse import urlsplit

import oss2

from segflow.credentials import credentials_from_context
from segflow.errors import ObjectExistsError, ObjectNotFoundError, StorageError
from segflow.settings import Settings
from segflow.signing import Credentials
from segflow.storage.base import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PART_SIZE,
    ObjectInfo,
    Storage,
    check_key,
    check_range,
)

RANGE_BEHAVIOR_HEADER = "x-oss-range-behavior"
"""Sent as `standard` with every ranged read: without it OSS answers a range reaching past the end with the
whole object, so a probe of the last bytes would download a whole video."""
FORBID_OVERWRITE_HEADER = "x-oss-forbid-overwrite"
"""`true` makes a put put-if-absent; OSS answers 409 `FileAlreadyExists`."""
MIN_PART_SIZE = 100 * 1024
"""Streams larger than one part go up as a multipart upload: parts numbered from 1, each at least 100 KiB
except the last, aborted on failure, one part in memory at a time."""
MAX_PARTS = 10_000
MAX_PAGE_SIZE = 1000
"""Listings page with `list_objects_v2` (continuation token, `start_after`), at most 1000 keys a page."""
CONNECT_TIMEOUT_SECONDS = 10
_ALIBABA_SUFFIX = ".aliyuncs.com"


def is_custom_domain(endpoint: str) -> bool:
    """True unless `endpoint` is one of OSS's own endpoints (`oss-<region>[-internal].aliyuncs.com`,
    `oss-accelerate.aliyuncs.com`, …; nobody else's domain ends in `.aliyuncs.com`): a custom domain names
    one bucket, so oss2 must treat it as a CNAME."""
    host = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}").hostname or ""
    return not host.lower().endswith(_ALIBABA_SUFFIX)


def _raise_storage_error(exc: oss2.exceptions.OssError, key: str, bucket: str) -> NoReturn:
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", "") or None
    request_id = getattr(exc, "request_id", "") or None
    if status == 404 and code == "NoSuchBucket":
        # Still "not found" for the services (the object went with its bucket), but said as it is.
        raise ObjectNotFoundError(
            f"bucket {bucket} does not exist", code=code, http_status=404, request_id=request_id
        ) from exc
    if status == 404:
        raise ObjectNotFoundError(
            f"no object {key!r} in bucket {bucket}", http_status=404, request_id=request_id
        ) from exc
    if status == 409 and code == "FileAlreadyExists":
        raise ObjectExistsError(
            f"object {key!r} already exists in bucket {bucket}", request_id=request_id
        ) from exc
    if isinstance(exc, oss2.exceptions.RequestError):
        raise StorageError(
            f"OSS unreachable for {bucket}/{key}: {exc.exception}", code="RequestError"
        ) from exc
    message = getattr(exc, "message", "") or type(exc).__name__
    raise StorageError(
        f"OSS error on {bucket}/{key}: {message}",
        code=code or "StorageError",
        http_status=status if isinstance(status, int) and status > 0 else None,
        request_id=request_id,
    ) from exc


def _etag(value: Any) -> str:
    return str(value or "").strip('"').upper()


class OssStorage(Storage):
    """One OSS bucket. `auth` is an `oss2.Auth` / `oss2.StsAuth`; `endpoint` like
    `https://oss-cn-shanghai-internal.aliyuncs.com`; `presign_endpoint` (default: `endpoint`) the host of
    presigned URLs, an OSS endpoint or a custom domain bound to the bucket."""

    def __init__(self, bucket: str, endpoint: str, auth: Any, *, presign_endpoint: str | None = None) -> None:
        """Presigned URLs are signed for `presign_endpoint`, which may differ from the endpoint reads go
        through: inside FC reads go to `-internal`, while a URL handed to a service must be reachable from
        outside. An OSS endpoint gives `<bucket>.<endpoint>` URLs; any other host is a custom domain bound
        to the bucket (a CNAME: `oss2.Bucket(..., is_cname=True)`, URLs `<domain>/<key>`)."""
        self.bucket = bucket
        self.endpoint = endpoint
        self.presign_endpoint = presign_endpoint or endpoint
        self._bucket = oss2.Bucket(auth, endpoint, bucket, connect_timeout=CONNECT_TIMEOUT_SECONDS)
        # Signing is pure computation: a second client for the presign host costs no connection.
        self._signer = (
            self._bucket
            if self.presign_endpoint == endpoint
            else oss2.Bucket(
                auth, self.presign_endpoint, bucket, is_cname=is_custom_domain(self.presign_endpoint)
            )
        )

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except oss2.exceptions.OssError as exc:
            _raise_storage_error(exc, key, self.bucket)

    # -- reads ---------------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectInfo:
        check_key(key)
        with self._errors(key):
            result = self._bucket.head_object(key)
        return ObjectInfo(
            key=key,
            size=int(result.content_length),
            etag=_etag(result.etag),
            last_modified=float(result.last_modified) if result.last_modified is not None else None,
        )

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        check_key(key)
        check_range(offset, length)
        if length == 0:
            return b""
        headers = {RANGE_BEHAVIOR_HEADER: "standard"}
        try:
            result = self._bucket.get_object(key, byte_range=(offset, offset + length - 1), headers=headers)
            data: bytes = result.read()
        except oss2.exceptions.OssError as exc:
            if getattr(exc, "status", None) == 416:  # standard behaviour: start at or past the end
                return b""
            _raise_storage_error(exc, key, self.bucket)
        return data[:length]

    def get_bytes(self, key: str) -> bytes:
        check_key(key)
        with self._errors(key):
            data: bytes = self._bucket.get_object(key).read()
        return data

    def open_stream(self, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
        check_key(key)
        if chunk_size <= 0:
            raise ValueError("chunk_size must be > 0")
        with self._errors(key):
            result = self._bucket.get_object(key)

        def chunks() -> Iterator[bytes]:
            with self._errors(key):
                while block := result.read(chunk_size):
                    yield block

        return chunks()

    # -- writes --------------------------------------------------------------------------------------
    @staticmethod
    def _headers(content_type: str | None, *, if_absent: bool = False) -> dict[str, str]:
        headers: dict[str, str] = {}
        if content_type:
            headers["Content-Type"] = content_type
        if if_absent:
            headers[FORBID_OVERWRITE_HEADER] = "true"
        return headers

    def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None, if_absent: bool = False
    ) -> str:
        check_key(key)
        with self._errors(key):
            headers = self._headers(content_type, if_absent=if_absent)
            result = self._bucket.put_object(key, data, headers=headers)
        return _etag(result.etag)

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> str:
        check_key(key)
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (OSS minimum)")
        parts_in = _parts(chunks, part_size)
        first = next(parts_in, b"")
        if len(first) < part_size:
            return self.put_bytes(key, first, content_type=content_type)  # small: one PutObject

        with self._errors(key):
            upload_id = self._bucket.init_multipart_upload(key, headers=self._headers(content_type)).upload_id
        try:
            parts: list[Any] = []
            for part in itertools.chain([first], parts_in):
                number = len(parts) + 1
                if number > MAX_PARTS:
                    raise StorageError(f"{key!r} needs more than {MAX_PARTS} parts; raise part_size")
                with self._errors(key):
                    uploaded = self._bucket.upload_part(key, upload_id, number, part)
                parts.append(oss2.models.PartInfo(number, uploaded.etag, size=len(part)))
            with self._errors(key):
                result = self._bucket.complete_multipart_upload(key, upload_id, parts)
        except BaseException:
            with contextlib.suppress(oss2.exceptions.OssError):
                self._bucket.abort_multipart_upload(key, upload_id)
            raise
        return _etag(result.etag)

    # -- listing, deletion, presign ------------------------------------------------------------------
    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        if not 0 < page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1…{MAX_PAGE_SIZE}")

        def pages() -> Iterator[ObjectInfo]:
            token = ""
            while True:
                with self._errors(prefix):
                    page = self._bucket.list_objects_v2(
                        prefix=prefix,
                        continuation_token=token,
                        start_after=start_after if not token else "",
                        max_keys=page_size,
                    )
                for item in page.object_list:
                    if item.key.endswith("/") and item.size == 0:
                        continue  # a console "folder" marker, not an object
                    yield ObjectInfo(
                        key=item.key,
                        size=int(item.size),
                        etag=_etag(item.etag),
                        last_modified=float(item.last_modified) if item.last_modified is not None else None,
                    )
                if not page.is_truncated or not page.next_continuation_token:
                    return
                token = page.next_continuation_token

        return pages()

    def delete(self, key: str) -> None:
        check_key(key)
        with self._errors(key):
            self._bucket.delete_object(key)

    def presign_get(self, key: str, expires_seconds: int) -> str:
        check_key(key)
        if expires_seconds <= 0:
            raise ValueError("expires_seconds must be > 0")
        with self._errors(key):
            url: str = self._signer.sign_url("GET", key, int(expires_seconds), slash_safe=True)
        return url


def _parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a stream of chunks of any size into parts of exactly `size` bytes (the last may be
    shorter), holding at most one part plus one chunk."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


def make_auth(context: object | None, settings: Settings) -> Any:
    """`oss2.StsAuth` for an STS key (FC's role: `context.credentials` on python3.10, `ALIBABA_CLOUD_*`
    on python3.12), plain `oss2.Auth` for a long-term AccessKey."""
    return auth_for(credentials_from_context(context, settings.credential_env))


def auth_for(credentials: Credentials) -> Any:
    """oss2's signer for a key: `StsAuth` when it carries a security token, else `Auth`."""
    if credentials.security_token:
        return oss2.StsAuth(
            credentials.access_key_id, credentials.access_key_secret, credentials.security_token
        )
    return oss2.Auth(credentials.access_key_id, credentials.access_key_secret)


def oss_storage_from_settings(
    settings: Settings, bucket: str, context: object | None = None, *, region: str | None = None
) -> OssStorage:
    """`OssStorage` for `bucket`, on the internal endpoint inside FC (same region) and the public one
    elsewhere, unless `SEGFLOW_OSS_ENDPOINT` says otherwise; presigned URLs on the public default domain
    unless `SEGFLOW_PRESIGN_ENDPOINT` says otherwise."""
    return OssStorage(
        bucket,
        settings.oss_endpoint_for(region),
        make_auth(context, settings),
        presign_endpoint=settings.presign_endpoint_for(region),
    )
