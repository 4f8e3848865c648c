"""The `upload` input path: what the official SDK's `*_advance` methods do, with the object streamed.

`AuthorizeFileUpload` grants one form upload to a temporary bucket of the vision service, the object is
POSTed there (OSS PostObject, `post_form`) and the action gets its URL (`temp_address`): steps on
`upload_input`. The object lands in the platform's own bucket, so this works on every account, whatever
its bucket's domains allow. Imported on first use only: the handlers' cold start never pays for it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping, Sequence
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from segflow.errors import ApiError, StorageError, TempUploadError
from segflow.results import error_from_document, parse_document
from segflow.transport import USER_AGENT, HttpTransport
from segflow.values import Value

if TYPE_CHECKING:
    from segflow.client import VisionClient
    from segflow.storage.base import Storage

SUCCESS_STATUS = "201"
_GRANT_FIELDS = ("Bucket", "Endpoint", "ObjectKey", "AccessKeyId", "EncodedPolicy", "Signature")
# RFC 3986 path characters stay as the platform wrote them (the SDK pastes the ObjectKey in unquoted).
_KEY_SAFE = "/-_.~!$&'()*+,;=:@"


class UploadGrant(Value):
    """An `AuthorizeFileUpload` answer: where one file may be POSTed, and the policy allowing it."""

    bucket: str
    endpoint: str
    object_key: str
    access_key_id: str
    encoded_policy: str
    signature: str
    request_id: str
    security_token: str | None = None
    """Only from segflow's engine on Function Compute, whose grant is signed with its role's STS key: OSS
    then wants the token in the form's `x-oss-security-token` field ("PostObject"). The service's own
    grants carry none."""

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> UploadGrant:
        missing = [
            name for name in _GRANT_FIELDS if not isinstance(document.get(name), str) or not document[name]
        ]
        request_id = str(document.get("RequestId") or "")
        if missing:
            raise ApiError(
                f"AuthorizeFileUpload answered without {', '.join(missing)}",
                code="InvalidResponse",
                request_id=request_id or None,
            )
        if any(c in document["ObjectKey"] for c in '"\r\n'):
            raise ApiError(
                "AuthorizeFileUpload gave an ObjectKey a form cannot carry", code="InvalidResponse"
            )
        bucket, endpoint, key, key_id, policy, signature = (str(document[name]) for name in _GRANT_FIELDS)
        token = document.get("SecurityToken")
        token = token if isinstance(token, str) and token else None
        return cls(bucket, endpoint, key, key_id, policy, signature, request_id, token)


class TempAddress(Value):
    post_url: str
    """Where the form is POSTed."""
    host: str
    """The Host the POST goes to; also the form's `host` field, as the SDK sends it."""
    object_url: str
    """The URL the vision action is given."""


def temp_address(grant: UploadGrant, scheme: str = "https") -> TempAddress:
    """How the temporary bucket is addressed — the one place that decides it.

    As the platform's SDK does: POST to `https://<Bucket>.<Endpoint>/` and hand the service
    `http://<Bucket>.<Endpoint>/<ObjectKey>`. A bucket subdomain of an IP literal or of `localhost` cannot
    be resolved, so such an Endpoint (the local engine's `127.0.0.1:<port>`) is addressed path-style,
    `<scheme>://<Endpoint>/<Bucket>/…`, with the scheme of the openplatform endpoint that named it.
    """
    key = quote(grant.object_key, safe=_KEY_SAFE)
    if _is_ip_or_localhost(grant.endpoint):
        base = f"{scheme}://{grant.endpoint}/{grant.bucket}"
        return TempAddress(f"{base}/", grant.endpoint, f"{base}/{key}")
    host = f"{grant.bucket}.{grant.endpoint}"
    return TempAddress(f"https://{host}/", host, f"http://{host}/{key}")


def form_fields(grant: UploadGrant, address: TempAddress) -> list[tuple[str, str]]:
    """The form's text fields in the order the SDK writes them (its form writer sorts them by name)."""
    fields = {
        "host": address.host,
        "OSSAccessKeyId": grant.access_key_id,
        "policy": grant.encoded_policy,
        "Signature": grant.signature,
        "key": grant.object_key,
        "success_action_status": SUCCESS_STATUS,
    }
    if grant.security_token:
        fields["x-oss-security-token"] = grant.security_token
    return sorted(fields.items())


class MultipartBody:
    """The form as a reader of known length: the text fields, the file streamed from `chunks` (exactly
    `size` bytes, else `StorageError`: the object changed while it was sent), the closing boundary.
    Holds one chunk at a time."""

    def __init__(
        self,
        fields: Sequence[tuple[str, str]],
        filename: str,
        chunks: Iterator[bytes],
        size: int,
        *,
        boundary: str | None = None,
    ) -> None:
        self.boundary = boundary or f"segflow{os.urandom(12).hex()}"
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields
        )
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: \r\n\r\n"
        )
        self._pieces = _pieces(head.encode("utf-8"), chunks, size, f"\r\n--{self.boundary}--\r\n".encode())
        self._chunks = chunks
        self._length = len(head.encode("utf-8")) + size + len(self.boundary) + 8
        self._current = b""
        self._offset = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return self._length

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (http.client asks for blocks of 8 KiB); `b""` at the end."""
        while self._offset >= len(self._current):
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._current, self._offset = piece, 0
        end = len(self._current) if size is None or size < 0 else self._offset + size
        block = self._current[self._offset : end]
        self._offset += len(block)
        return block

    def close(self) -> None:
        """Give the storage stream back (an attempt that broke off leaves it half read)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


def _pieces(head: bytes, chunks: Iterator[bytes], size: int, tail: bytes) -> Iterator[bytes]:
    yield head
    sent = 0
    for chunk in chunks:
        sent += len(chunk)
        if sent > size:
            break
        yield chunk
    if sent != size:
        # The declared Content-Length can no longer be met: fail the attempt rather than send a lie.
        raise StorageError(
            f"the object changed while it was uploaded ({sent} bytes read, {size} expected)",
            code="ObjectChanged",
        )
    yield tail


def post_form(transport: HttpTransport, address: TempAddress, body: MultipartBody) -> None:
    """One PostObject. A refusal raises `ApiError` with OSS's own Code (e.g. `AccessDenied` for an expired
    policy or a bad signature, `EntityTooLarge`), HTTP status, RequestId and HostId."""
    headers = {
        "content-type": body.content_type,
        "date": formatdate(usegmt=True),
        "user-agent": USER_AGENT,
    }
    answer = transport.send("POST", address.post_url, headers, body, limiter=None, what="PostObject")
    if 200 <= answer.status < 300:
        return
    try:
        document = parse_document(answer.body, answer.headers.get("content-type", ""))
    except (ValueError, SyntaxError):
        document = {}
    refused = error_from_document(document, answer.status)
    raise TempUploadError(
        f"the service's temporary bucket refused the upload: {refused.message}",
        code=refused.code,
        http_status=answer.status,
        request_id=refused.request_id,
        host_id=refused.host_id,
    )


def upload_input(vision: VisionClient, storage: Storage, key: str, *, product: str, region_id: str) -> str:
    """Authorize, POST `key` of `storage` to the temporary bucket of `product` (imageseg or videoseg), and
    return the URL to hand the action. Each POST attempt (5xx and broken connections are retried by the
    client's policy) streams the object afresh.

    1. `AuthorizeFileUpload` (openplatform 2019-12-19; `VisionClient.authorize_file_upload`) names a
       temporary bucket and grants one form upload to it: Bucket, Endpoint, ObjectKey, AccessKeyId,
       EncodedPolicy, Signature.
    2. A `multipart/form-data` POST to that bucket with the fields the SDK sends, in its order (`form_fields`:
       the text fields sorted by name, `x-oss-security-token` when the grant carries a `SecurityToken`,
       then `file`, last as OSS requires). The body is a reader of known length (`MultipartBody`): requests
       sends a `Content-Length` and reads it block by block, one storage chunk (1 MiB) in memory at a time.
    3. The action is then called with the object's URL (`temp_address`)."""
    grant = UploadGrant.from_document(vision.authorize_file_upload(product, region_id))
    address = temp_address(grant, urlsplit(vision.endpoints.openplatform).scheme)
    size = storage.head(key).size

    def attempt() -> None:
        body = MultipartBody(form_fields(grant, address), grant.object_key, storage.open_stream(key), size)
        try:
            post_form(vision.transport, address, body)
        finally:
            body.close()

    vision.retry.run(attempt, what=f"PostObject of {key}")
    return address.object_url


def _is_ip_or_localhost(endpoint: str) -> bool:
    host = urlsplit(f"//{endpoint}").hostname or ""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
