"""The engine's temporary bucket: `AuthorizeFileUpload` and the form upload it grants, as the platform does.

The official SDK's `*_advance` methods (and segflow's `upload` input path) hand the service any file this
way: `AuthorizeFileUpload` (openplatform, version 2019-12-19) answers with a temporary bucket and a signed
upload policy, the client POSTs the file there as a form (OSS PostObject), and the action is then called
with the object's URL. This module plays both parts for the engine:

- `authorize(params)`: the answer's top-level fields `Bucket` (`viapi-customer-temp`), `Endpoint` (the
  engine's own `host:port`), `ObjectKey` (under a random prefix), `AccessKeyId`, `EncodedPolicy`,
  `Signature`, `UseAccelerate`. The policy expires after `policy_seconds` and allows one key prefix and
  a file of at most the product's largest documented input (imageseg 4 MiB, videoseg 1 GiB).
- `receive(...)`: the PostObject, copied to disk from a reader of the request body (a 1 GB video is
  never held in memory: `is_upload` is the route whose body the engine hands over as a file), checked the way
  OSS documents it (PostObject; "How to handle common errors when the PostObject operation is called"):
  the form's `Signature` is Base64(HMAC-SHA1(AccessKeySecret, policy)); a wrong one is 403 `AccessDenied`,
  an expired policy 403 `AccessDenied` ("Invalid according to Policy: Policy expired."), an unknown
  `OSSAccessKeyId` 403 `InvalidAccessKeyId`, a policy that is not Base64 JSON with `expiration` and
  `conditions` 400 `InvalidPolicyDocument`, a broken form 400 `MalformedPOSTRequest`; a key outside the
  policy's prefix is 403 `AccessDenied` ("Policy Condition failed", the policy-mismatch case), a file
  over `content-length-range` 400 `EntityTooLarge`. `success_action_status=201` is answered 201 with the
  `PostResponse` XML (Bucket, Location, Key, ETag). A body whose reader times out is 400
  `RequestTimeout`, OSS's code for a socket not read from or written to in time (behind waitress a body
  that stops arriving never reaches the bucket: the server drops it). Errors are OSS's `<Error>` XML.
- `object_path(path)`: the stored object for a GET, unsigned as the platform's temporary URLs are, for
  `object_ttl_seconds` (then 404 `NoSuchKey`; `cleanup()` deletes it).

Addressing: the real bucket is reached as `<Bucket>.<Endpoint>`; a subdomain of the engine's IP address
cannot be resolved, so the engine serves it path-style, `POST /<Bucket>/` and `GET /<Bucket>/<ObjectKey>`
(the client side decides this in `segflow.tempupload.temp_address`).

Choices where OSS documents nothing for this case: a missing `key` is 400 `InvalidArgument`; a missing
`OSSAccessKeyId`, `policy` or `Signature` is 403 `AccessDenied`; a declared body far over the limit is
refused before it is read, and the connection closed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol
from xml.sax.saxutils import escape

from segflow.catalogue import ACTIONS
from segflow.errors import InputValidationError
from segflow_engine.handler import oss_error
from segflow_engine.protocol import HttpAnswer

TEMP_BUCKET = "viapi-customer-temp"
AUTHORIZE_ACTION = "AuthorizeFileUpload"
OPENPLATFORM_VERSION = "2019-12-19"
PRODUCTS = ("imageseg", "videoseg")
POLICY_SECONDS = 1800
OBJECT_TTL_SECONDS = 3600
FORM_OVERHEAD_BYTES = 64 * 1024  # room for the text fields and boundaries around the file
_BLOCK = 256 * 1024
_DRAIN_BYTES = 32 * 1024 * 1024  # a refused body up to this much is read, so the client sees the answer
_TOO_LARGE = "Your proposed upload exceeds the maximum allowed size."
_EXPIRATION_FORMAT = "%Y-%m-%dT%H:%M:%S.000Z"


class BodyReader(Protocol):
    """A request body: the server's received body (a file beyond its spool size) or one in memory; a reader
    that stalls may raise `TimeoutError` (the tests' http.server stand-in of the bucket reads a socket)."""

    def read(self, size: int = -1, /) -> bytes: ...


class PostRefused(Exception):
    """A PostObject refusal, as OSS reports it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def largest_input(product: str) -> int:
    """The largest `max_bytes` the catalogue documents for any action of `product`."""
    return max(a.limits.max_bytes or 0 for a in ACTIONS.values() if a.product == product)


def authorized_product(params: Mapping[str, str]) -> str:
    """The `Product` an `AuthorizeFileUpload` call names, if it is one the engine serves."""
    product = params.get("Product", "").strip()
    if product not in PRODUCTS:
        raise InputValidationError(
            f"Product must be one of {', '.join(PRODUCTS)}, got {product!r}", code="InvalidParameter"
        )
    return product


class PostSigner(NamedTuple):
    """Who signs an upload grant, and for which bucket: `endpoint` is `host[:port]`, no scheme; an STS
    key's `security_token` goes into the grant, as OSS wants it in the form (`x-oss-security-token`)."""

    bucket: str
    endpoint: str
    access_key_id: str
    secret: str
    security_token: str | None = None


def sign_policy(secret: str, encoded_policy: str) -> str:
    """OSS PostObject's V1 signature: Base64(HMAC-SHA1(AccessKeySecret, the Base64 policy))."""
    digest = hmac.new(secret.encode(), encoded_policy.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def post_grant(signer: PostSigner, prefix: str, max_bytes: int, expires_at: float) -> dict[str, Any]:
    """`AuthorizeFileUpload`'s fields: a policy allowing one file of at most `max_bytes` under `prefix`
    of `signer.bucket` until `expires_at`, signed (OSS "PostObject" and its Post Policy)."""
    policy = {
        "expiration": datetime.fromtimestamp(expires_at, timezone.utc).strftime(_EXPIRATION_FORMAT),
        "conditions": [
            {"bucket": signer.bucket},
            ["starts-with", "$key", prefix],
            ["content-length-range", 0, max_bytes],
        ],
    }
    encoded = base64.b64encode(json.dumps(policy).encode("utf-8")).decode("ascii")
    grant: dict[str, Any] = {
        "Bucket": signer.bucket,
        "Endpoint": signer.endpoint,
        "ObjectKey": f"{prefix}{uuid.uuid4().hex}",
        "AccessKeyId": signer.access_key_id,
        "EncodedPolicy": encoded,
        "Signature": sign_policy(signer.secret, encoded),
        "UseAccelerate": False,
    }
    if signer.security_token:
        grant["SecurityToken"] = signer.security_token
    return grant


class TempBucket:
    """One engine's temporary bucket under `root`; `endpoint` is how clients reach the engine."""

    def __init__(
        self,
        root: Path,
        endpoint: str,
        *,
        clock: Callable[[], float] = time.time,
        policy_seconds: int = POLICY_SECONDS,
        object_ttl_seconds: int = OBJECT_TTL_SECONDS,
    ) -> None:
        self.root = Path(root)
        self.endpoint = endpoint
        self.clock = clock
        self.policy_seconds = policy_seconds
        self.object_ttl_seconds = object_ttl_seconds
        self.access_key_id = f"SEGFLOWTEMP{secrets.token_hex(6).upper()}"
        self._secret = secrets.token_urlsafe(24)
        self._lock = threading.Lock()
        (self.root / TEMP_BUCKET).mkdir(parents=True, exist_ok=True)

    # -- AuthorizeFileUpload -------------------------------------------------------------------------
    @staticmethod
    def is_authorize_call(params: Mapping[str, str]) -> bool:
        return params.get("Action") == AUTHORIZE_ACTION and params.get("Version") == OPENPLATFORM_VERSION

    def authorize(self, params: Mapping[str, str]) -> dict[str, Any]:
        """The answer's fields (beside RequestId) for a verified `AuthorizeFileUpload` call."""
        return self.grant(authorized_product(params))

    def grant(
        self, product: str, *, expires_in: float | None = None, max_bytes: int | None = None
    ) -> dict[str, Any]:
        """A fresh upload grant; `expires_in` and `max_bytes` override the policy (tests script refusals)."""
        seconds = self.policy_seconds if expires_in is None else expires_in
        return post_grant(
            PostSigner(TEMP_BUCKET, self.endpoint, self.access_key_id, self._secret),
            f"{secrets.token_hex(8)}/",
            largest_input(product) if max_bytes is None else max_bytes,
            self.clock() + seconds,
        )

    def _sign(self, encoded_policy: str) -> str:
        return sign_policy(self._secret, encoded_policy)

    # -- PostObject ----------------------------------------------------------------------------------
    @staticmethod
    def is_upload(method: str, path: str) -> bool:
        return method == "POST" and path.rstrip("/") == f"/{TEMP_BUCKET}"

    def receive(self, headers: Mapping[str, str], body: BodyReader, length: int) -> tuple[HttpAnswer, bool]:
        """Answer one PostObject whose body (`length` bytes) is read from `body`; the flag says whether
        the connection must be closed (the body was not read to its end). A declared length over any
        product's limit is refused before a byte of the body is read."""
        reader = _FormReader(body, max(length, 0))
        try:
            if length > largest_input("videoseg") + FORM_OVERHEAD_BYTES:
                raise PostRefused(400, "EntityTooLarge", _TOO_LARGE)
            boundary = _boundary(headers.get("content-type", ""))
            answer = self._store(reader, boundary)
        except TimeoutError:
            message = "Your socket connection to the server was not read from or written to in time."
            return oss_error(400, "RequestTimeout", message, TEMP_BUCKET), True
        except PostRefused as refused:
            answer = oss_error(refused.status, refused.code, refused.message, TEMP_BUCKET)
        return answer, not reader.drain(limit=_DRAIN_BYTES)

    def _store(self, reader: _FormReader, boundary: bytes) -> HttpAnswer:
        fields = _read_text_fields(reader, boundary)
        key, smallest, largest = self._check_form(fields)
        tmp = self.root / f".upload-{uuid.uuid4().hex}"
        try:
            with tmp.open("wb") as out:
                size, digest = reader.copy_until(b"\r\n--" + boundary, out, largest)
            if size < smallest:
                raise PostRefused(
                    400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed."
                )
            target = self._path(key)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return _post_response(fields, key, digest, self.endpoint)

    def _check_form(self, fields: Mapping[str, str]) -> tuple[str, int, int]:
        """The checks OSS makes before it takes the file: who signed, which policy, which key. Returns the
        key and the file sizes the policy allows."""
        for name in ("OSSAccessKeyId", "policy", "Signature"):
            if not fields.get(name.lower()):
                raise PostRefused(403, "AccessDenied", f"the form has no {name} field")
        key = str(fields.get("key") or "")
        if not key:
            raise PostRefused(400, "InvalidArgument", "the form has no key field")
        if fields["ossaccesskeyid"] != self.access_key_id:
            raise PostRefused(
                403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist in our records."
            )
        if not hmac.compare_digest(self._sign(fields["policy"]), fields["signature"]):
            raise PostRefused(
                403,
                "AccessDenied",
                "SignatureDoesNotMatch The request signature we calculated does not match the signature "
                "you provided. Check your key and signing method.",
            )
        policy = _decode_policy(fields["policy"])
        if _parse_expiration(policy["expiration"]) < self.clock():
            raise PostRefused(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
        smallest, largest = _check_conditions(policy["conditions"], key)
        self._path(key)  # refuses keys that would leave the bucket
        return key, smallest, largest

    # -- GET and cleanup -----------------------------------------------------------------------------
    def object_path(self, path: str) -> Path | None:
        """The stored object a `GET /<Bucket>/<ObjectKey>` names, while it lives; None otherwise."""
        prefix = f"/{TEMP_BUCKET}/"
        if not path.startswith(prefix):
            return None
        try:
            target = self._path(path[len(prefix) :])
        except PostRefused:
            return None
        if not target.is_file() or target.stat().st_mtime + self.object_ttl_seconds < self.clock():
            return None
        return target

    @staticmethod
    def is_object_path(path: str) -> bool:
        return path.startswith(f"/{TEMP_BUCKET}/")

    def cleanup(self) -> int:
        """Deletes objects older than `object_ttl_seconds` (and empty prefixes); returns how many went."""
        cutoff = self.clock() - self.object_ttl_seconds
        removed = 0
        bucket = self.root / TEMP_BUCKET
        for directory in list(bucket.iterdir()):
            files = [f for f in directory.rglob("*") if f.is_file()] if directory.is_dir() else [directory]
            if files and not all(f.stat().st_mtime < cutoff for f in files):
                continue
            removed += len(files)
            if directory.is_dir():
                shutil.rmtree(directory, ignore_errors=True)
            else:
                directory.unlink(missing_ok=True)
        return removed

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts) or "\\" in key or "\x00" in key:
            raise PostRefused(400, "InvalidObjectName", "The specified object is not valid.")
        return self.root.joinpath(TEMP_BUCKET, *parts)


# -- the form ------------------------------------------------------------------------------------------
class _FormReader:
    """Reads a request body of known length in blocks, finding multipart delimiters across blocks."""

    def __init__(self, raw: BodyReader, length: int) -> None:
        self._raw = raw
        self._left = length
        self._buffer = bytearray()

    def _fill(self) -> bool:
        if self._left <= 0:
            return False
        block = self._raw.read(min(_BLOCK, self._left))
        if not block:
            self._left = 0
            return False
        self._left -= len(block)
        self._buffer += block
        return True

    def read_until(self, delimiter: bytes, limit: int) -> bytes:
        """The bytes before `delimiter` (consumed too); at most `limit` of them."""
        while (index := self._buffer.find(delimiter)) < 0:
            if len(self._buffer) > limit or not self._fill():
                raise _malformed()
        data = bytes(self._buffer[:index])
        del self._buffer[: index + len(delimiter)]
        return data

    def copy_until(self, delimiter: bytes, out: BinaryIO, limit: int) -> tuple[int, str]:
        """Copies the bytes before `delimiter` to `out`; (size, MD5 hex); `EntityTooLarge` past `limit`."""
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        while True:
            index = self._buffer.find(delimiter)
            ready = index if index >= 0 else max(0, len(self._buffer) - len(delimiter) + 1)
            size += ready
            if size > limit:
                raise PostRefused(400, "EntityTooLarge", _TOO_LARGE)
            out.write(self._buffer[:ready])
            digest.update(self._buffer[:ready])
            if index >= 0:
                del self._buffer[: index + len(delimiter)]
                return size, digest.hexdigest().upper()
            del self._buffer[:ready]
            if not self._fill():
                raise _malformed()

    def drain(self, limit: int) -> bool:
        """Reads what is left of the body when that is at most `limit` bytes; False when it was left."""
        if self._left > limit:
            return False
        try:
            while self._fill():
                self._buffer.clear()
        except TimeoutError:  # the client stopped sending the rest
            return False
        return True


def _boundary(content_type: str) -> bytes:
    kind, _, rest = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise _malformed()
    for item in rest.split(";"):
        name, _, value = item.strip().partition("=")
        if name.lower() == "boundary" and value.strip('"'):
            return value.strip('"').encode("latin-1")
    raise _malformed()


def _read_text_fields(reader: _FormReader, boundary: bytes) -> dict[str, str]:
    """The text fields (names lower-cased, as OSS compares them) up to the `file` part, which must be last."""
    reader.read_until(b"--" + boundary + b"\r\n", limit=FORM_OVERHEAD_BYTES)
    fields: dict[str, str] = {}
    while True:
        headers = reader.read_until(b"\r\n\r\n", limit=FORM_OVERHEAD_BYTES).decode("utf-8", "replace")
        name = _disposition_name(headers)
        if name == "file":
            return fields
        value = reader.read_until(b"\r\n--" + boundary + b"\r\n", FORM_OVERHEAD_BYTES)
        fields[name.lower()] = value.decode("utf-8", "replace")


def _disposition_name(headers: str) -> str:
    for line in headers.split("\r\n"):
        field_name, _, value = line.partition(":")
        if field_name.strip().lower() != "content-disposition":
            continue
        for item in value.split(";")[1:]:
            key, _, quoted = item.strip().partition("=")
            if key.lower() == "name":
                return quoted.strip('"')
    raise _malformed()


def _decode_policy(encoded: str) -> dict[str, Any]:
    try:
        policy = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        policy = None
    if not isinstance(policy, dict) or "expiration" not in policy or "conditions" not in policy:
        raise PostRefused(
            400, "InvalidPolicyDocument", "Invalid Policy: the policy must hold expiration and conditions."
        )
    return policy


def _parse_expiration(text: Any) -> float:
    try:
        return datetime.strptime(str(text), _EXPIRATION_FORMAT).replace(tzinfo=timezone.utc).timestamp()
    except ValueError:
        raise PostRefused(
            400, "InvalidPolicyDocument", "Invalid Policy: Invalid 'expiration' value."
        ) from None


def _check_conditions(conditions: Any, key: str) -> tuple[int, int]:
    """The (min, max) file size the policy allows; `AccessDenied` for a condition the form fails."""
    low, high = 0, largest_input("videoseg")
    for condition in conditions if isinstance(conditions, list) else []:
        if isinstance(condition, dict) and condition.get("bucket") not in (None, TEMP_BUCKET):
            raise _condition_failed(condition)
        if not isinstance(condition, list) or len(condition) != 3:
            continue
        kind, subject, value = condition
        if kind == "content-length-range":
            if not all(isinstance(v, int) and v >= 0 for v in (subject, value)):
                raise PostRefused(400, "InvalidPolicyDocument", "Invalid Policy: content-length-range.")
            low, high = subject, value
        elif subject == "$key" and not _key_matches(kind, key, value):
            raise _condition_failed(condition)
    return low, high


def _key_matches(kind: Any, key: str, value: Any) -> bool:
    if kind == "starts-with":
        return key.startswith(str(value))
    return kind != "eq" or key == str(value)


def _condition_failed(condition: Any) -> PostRefused:
    return PostRefused(
        403, "AccessDenied", f"Invalid according to Policy: Policy Condition failed: {json.dumps(condition)}"
    )


def _malformed() -> PostRefused:
    return PostRefused(
        400, "MalformedPOSTRequest", "The body of your POST request is not well-formed multipart/form-data."
    )


def _post_response(fields: Mapping[str, str], key: str, etag: str, endpoint: str) -> HttpAnswer:
    status = str(fields.get("success_action_status") or "")
    if status == "201":
        location = f"http://{endpoint}/{TEMP_BUCKET}/{key}"
        text = (
            "<?xml version='1.0' encoding='UTF-8'?><PostResponse>"
            f"<Bucket>{TEMP_BUCKET}</Bucket><Location>{escape(location)}</Location>"
            f'<Key>{escape(key)}</Key><ETag>"{etag}"</ETag></PostResponse>'
        )
        return HttpAnswer(201, "application/xml", text.encode("utf-8"))
    return HttpAnswer(200 if status == "200" else 204, "application/xml", b"")
