"""A loopback OSS server for the real oss2 client: what the engine on Function Compute stores its results in.

    with OssServer(keys={"LTAI...": "secret"}) as oss:      # an STS key: keys={id: (secret, token)}
        bucket = oss2.Bucket(oss2.Auth(id, secret), oss.endpoint, "segflow-demo")   # path-style on an IP
        oss.objects("segflow-demo")                          # {key: bytes}

Built from OSS's API reference (the documents named beside each rule), for what segflow's `OssStorage` and
oss2 2.16+ send; anything else is refused 400 NotImplemented rather than half-answered:

- Signature V1, "Include signatures in the Authorization header": `Authorization: OSS <AccessKeyId>:
  <Signature>`, Signature = Base64(HMAC-SHA1(secret, VERB \\n Content-MD5 \\n Content-Type \\n Date \\n
  CanonicalizedOSSHeaders CanonicalizedResource)); the `x-oss-*` headers lower-cased and sorted as
  `name:value\\n`; the resource `/<bucket>/<key>` with the sub-resources of the documented list, sorted.
  `Date` more than 15 minutes off → 403 RequestTimeTooSkewed. An STS key sends `x-oss-security-token`.
- "Add signatures to URLs" (presigned): `OSSAccessKeyId`, `Expires` (epoch seconds, in the place of Date),
  `Signature`, and `security-token` (a sub-resource, so signed) for STS; past `Expires` → 403 AccessDenied
  "Request has expired.".
- PutObject (`x-oss-forbid-overwrite: true` → 409 FileAlreadyExists), GetObject (`Range`; with
  `x-oss-range-behavior: standard` an unsatisfiable range is 416 InvalidRange, without it the whole object
  comes back 200, "Range"), HeadObject (404 without a body), DeleteObject (204, also for a missing key),
  ListObjectsV2 (`list-type=2`, `prefix`, `start-after`, `continuation-token`, `max-keys` ≤ 1000,
  `encoding-type=url`), InitiateMultipartUpload / UploadPart / CompleteMultipartUpload (parts in order, every
  part but the last ≥ 100 KB → 400 EntityTooSmall; ETag `<MD5 of the parts' MD5s>-<n>`, in the body and
  the `ETag` header) /
  AbortMultipartUpload. ETags are the upper-case MD5, quoted. Errors are the XML `<Error>` with Code,
  Message, RequestId and HostId, and `x-oss-request-id`.
- PostObject, a form upload authorised by a signed policy: tests/support/oss_post.py.
- `hold(key)` keeps every GetObject of `key` waiting until its `release` is set (a slow download, for a
  test that stops an engine while it reads its input); its `waiting` is set once one is waiting.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, quote, unquote, urlsplit
from xml.sax.saxutils import escape

from tests.support.loopback_http import LoopbackServer
from tests.support.oss_post import PostRefused, check_post, read_form, success_status

MAX_SKEW_SECONDS = 15 * 60
MIN_PART_BYTES = 100 * 1024
MAX_KEYS = 1000
HOLD_SECONDS = 120.0  # a held GetObject waits at most this long
SUBRESOURCES = frozenset(
    {
        "acl", "uploads", "location", "cors", "logging", "website", "referer", "lifecycle", "delete",
        "append", "tagging", "objectMeta", "uploadId", "partNumber", "security-token", "position", "img",
        "style", "styleName", "replication", "replicationProgress", "replicationLocation", "cname",
        "bucketInfo", "comp", "qos", "live", "status", "vod", "startTime", "endTime", "symlink",
        "x-oss-process", "response-content-type", "response-content-language", "response-expires",
        "response-cache-control", "response-content-disposition", "response-content-encoding", "udf",
        "udfName", "udfImage", "udfId", "udfImageDesc", "udfApplication", "udfApplicationLog", "restore",
        "callback", "callback-var", "continuation-token", "versions", "versioning", "versionId", "policy",
        "stat", "objectInfo", "encryption", "requestPayment", "worm", "wormId", "wormExtend",
    }
)  # fmt: skip


class OssError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Hold(NamedTuple):
    waiting: threading.Event
    release: threading.Event


@dataclass
class StoredObject:
    data: bytes
    etag: str
    content_type: str
    modified: float = field(default_factory=time.time)


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def md5_etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


class OssServer(LoopbackServer):
    """OSS on 127.0.0.1 (path-style: oss2 uses `/<bucket>/<key>` for an IP endpoint); a context manager."""

    def __init__(self, keys: Mapping[str, str | tuple[str, str]], *, buckets: tuple[str, ...] = ()) -> None:
        self.keys = {k: (v, None) if isinstance(v, str) else v for k, v in keys.items()}
        self._buckets: dict[str, dict[str, StoredObject]] = {name: {} for name in buckets}
        self._uploads: dict[str, tuple[str, str, dict[int, bytes], str]] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self._holds: dict[str, Hold] = {}
        super().__init__(_handler(self))

    @property
    def endpoint(self) -> str:
        return self.base_url

    def hold(self, key: str) -> Hold:
        held = Hold(threading.Event(), threading.Event())
        self._holds[key] = held
        return held

    def objects(self, bucket: str) -> dict[str, bytes]:
        with self._lock:
            return {key: stored.data for key, stored in self._buckets.get(bucket, {}).items()}

    # -- one request ---------------------------------------------------------------------------------
    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        bucket, _, raw_key = parts.path.lstrip("/").partition("/")
        key = unquote(raw_key)
        try:
            if method == "POST" and not key and not query:
                return self._post_object(bucket, headers, body)
            self._authenticate(method, bucket, key, query, headers)
            hold = self._holds.get(key) if method == "GET" else None
            if hold is not None:
                hold.waiting.set()
                hold.release.wait(HOLD_SECONDS)
            with self._lock:
                objects = self._buckets.get(bucket)
                if objects is None:
                    raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
                return self._dispatch(method, bucket, key, query, headers, body, objects)
        except OssError as error:
            return _error(error, bucket, head=method == "HEAD")

    def _dispatch(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        objects: dict[str, StoredObject],
    ) -> Answer:
        if not key:
            if method == "GET" and query.get("list-type") == "2":
                return _list_v2(objects, query)
            raise OssError(400, "NotImplemented", f"{method} on the bucket is not served here")
        if "uploads" in query and method == "POST":
            return self._initiate(bucket, key, headers)
        if "uploadId" in query:
            return self._multipart(method, bucket, key, query, body, objects)
        if method == "PUT":
            if headers.get("x-oss-forbid-overwrite") == "true" and key in objects:
                raise OssError(409, "FileAlreadyExists", "The object you specified already exists.")
            etag = md5_etag(body)
            objects[key] = StoredObject(body, etag, headers.get("content-type", "application/octet-stream"))
            return Answer(200, headers={"ETag": f'"{etag}"'})
        if method in ("GET", "HEAD"):
            return _read(objects, key, headers, head=method == "HEAD")
        if method == "DELETE":
            objects.pop(key, None)
            return Answer(204)
        raise OssError(400, "NotImplemented", f"{method} is not served here")

    def _post_object(self, bucket: str, headers: dict[str, str], body: bytes) -> Answer:
        """PostObject: authorised by the form's signed policy (tests/support/oss_post.py)."""
        try:
            fields, data, content_type = read_form(headers.get("content-type", ""), body)
            key = check_post(bucket, fields, len(data), self.keys)
        except PostRefused as refused:
            raise OssError(refused.status, refused.code, refused.message) from refused
        with self._lock:
            objects = self._buckets.get(bucket)
            if objects is None:
                raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
            etag = md5_etag(data)
            objects[key] = StoredObject(data, etag, content_type or "application/octet-stream")
        status = success_status(fields)
        document = (
            f"<PostResponse><Bucket>{escape(bucket)}</Bucket><Location>{escape(self.base_url)}/{escape(bucket)}/"
            f'{escape(key)}</Location><Key>{escape(key)}</Key><ETag>"{etag}"</ETag></PostResponse>'
        )
        body_out = _xml(document).body if status == 201 else b""
        return Answer(status, body_out, {"ETag": f'"{etag}"', "Content-Type": "application/xml"})

    def _initiate(self, bucket: str, key: str, headers: dict[str, str]) -> Answer:
        upload_id = uuid.uuid4().hex.upper()
        content_type = headers.get("content-type", "application/octet-stream")
        self._uploads[upload_id] = (bucket, key, {}, content_type)
        document = (
            f"<InitiateMultipartUploadResult><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>"
        )
        return _xml(document)

    def _multipart(
        self,
        method: str,
        bucket: str,
        key: str,
        query: dict[str, str],
        body: bytes,
        objects: dict[str, StoredObject],
    ) -> Answer:
        upload = self._uploads.get(query["uploadId"])
        if upload is None or upload[:2] != (bucket, key):
            raise OssError(404, "NoSuchUpload", "The specified upload does not exist.")
        parts = upload[2]
        if method == "PUT":
            parts[int(query.get("partNumber", "0"))] = body
            return Answer(200, headers={"ETag": f'"{md5_etag(body)}"'})
        if method == "DELETE":
            del self._uploads[query["uploadId"]]
            return Answer(204)
        if method != "POST":
            raise OssError(400, "NotImplemented", f"{method} on an upload is not served here")
        listed = [
            (int(part.findtext("PartNumber") or 0), (part.findtext("ETag") or "").strip('"'))
            for part in ET.fromstring(body).iter("Part")
        ]
        numbers = [number for number, _ in listed]
        if numbers != sorted(numbers) or set(numbers) != set(parts):
            raise OssError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        for index, (number, etag) in enumerate(listed):
            if etag.upper() != md5_etag(parts[number]):
                raise OssError(400, "InvalidPart", "One or more of the specified parts could not be found.")
            if index < len(listed) - 1 and len(parts[number]) < MIN_PART_BYTES:
                raise OssError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum.")
        data = b"".join(parts[number] for number in numbers)
        digest = hashlib.md5(b"".join(hashlib.md5(parts[n]).digest() for n in numbers)).hexdigest().upper()
        etag = f"{digest}-{len(numbers)}"
        objects[key] = StoredObject(data, etag, upload[3])
        del self._uploads[query["uploadId"]]
        document = (
            f"<CompleteMultipartUploadResult><Bucket>{escape(bucket)}</Bucket><Key>{escape(key)}</Key>"
            f'<ETag>"{etag}"</ETag></CompleteMultipartUploadResult>'
        )
        answer = _xml(document)
        answer.headers["ETag"] = f'"{etag}"'  # in the header too, as OSS sends it (oss2 reads it there)
        return answer

    # -- signature V1 ----------------------------------------------------------------------------------
    def _authenticate(
        self, method: str, bucket: str, key: str, query: dict[str, str], headers: dict[str, str]
    ) -> None:
        presigned = "OSSAccessKeyId" in query
        if presigned:
            access_key_id, signature, when = (
                query["OSSAccessKeyId"],
                query.get("Signature", ""),
                query.get("Expires", ""),
            )
            if not when.isdigit() or int(when) < time.time():
                raise OssError(403, "AccessDenied", "Request has expired.")
            token = query.get("security-token")
        else:
            scheme, _, credential = headers.get("authorization", "").partition(" ")
            access_key_id, _, signature = credential.partition(":")
            if scheme != "OSS" or not signature:
                raise OssError(403, "AccessDenied", "Anonymous access is forbidden for this operation.")
            when = headers.get("date", "")
            _check_date(when)
            token = headers.get("x-oss-security-token")
        known = self.keys.get(access_key_id)
        if known is None:
            raise OssError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.")
        secret, expected_token = known
        if expected_token is not None and token != expected_token:
            raise OssError(403, "InvalidAccessKeyId", "The security token you provided is invalid.")
        string_to_sign = "\n".join(
            [
                method,
                headers.get("content-md5", ""),
                headers.get("content-type", "") if not presigned else "",
                when,
                _oss_headers(headers) + _resource(bucket, key, query),
            ]
        )
        computed = base64.b64encode(
            hmac.new(secret.encode(), string_to_sign.encode(), hashlib.sha1).digest()
        ).decode()
        if not hmac.compare_digest(computed, signature):
            raise OssError(
                403,
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you provided.",
            )


def _check_date(value: str) -> None:
    try:
        sent = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError) as exc:
        raise OssError(403, "AccessDenied", "The Date header is missing or invalid.") from exc
    if abs((datetime.now(timezone.utc) - sent).total_seconds()) > MAX_SKEW_SECONDS:
        raise OssError(
            403,
            "RequestTimeTooSkewed",
            "The difference between the request time and the current time is too large.",
        )


def _oss_headers(headers: Mapping[str, str]) -> str:
    chosen = sorted((name, value.strip()) for name, value in headers.items() if name.startswith("x-oss-"))
    return "".join(f"{name}:{value}\n" for name, value in chosen)


def _resource(bucket: str, key: str, query: Mapping[str, str]) -> str:
    subresources = sorted((k, v) for k, v in query.items() if k in SUBRESOURCES)
    text = "&".join(f"{k}={v}" if v else k for k, v in subresources)
    return f"/{bucket}/{key}" + (f"?{text}" if text else "")


def _read(objects: dict[str, StoredObject], key: str, headers: Mapping[str, str], *, head: bool) -> Answer:
    stored = objects.get(key)
    if stored is None:
        raise OssError(404, "NoSuchKey", "The specified key does not exist.")
    data, status = stored.data, 200
    common = {
        "ETag": f'"{stored.etag}"',
        "Content-Type": stored.content_type,
        "Last-Modified": email.utils.formatdate(stored.modified, usegmt=True),
        "Accept-Ranges": "bytes",
    }
    wanted = headers.get("range", "")
    if wanted.startswith("bytes=") and not head:
        first_text, _, last_text = wanted[len("bytes=") :].partition("-")
        size = len(data)
        first = int(first_text) if first_text else max(size - int(last_text or 0), 0)
        last = int(last_text) if first_text and last_text else size - 1
        standard = headers.get("x-oss-range-behavior") == "standard"
        if first >= size and standard:
            raise OssError(416, "InvalidRange", "The requested range cannot be satisfied.")
        if first < size and (last < size or standard):  # else the legacy answer: the whole object, 200
            last = min(last, size - 1)
            common["Content-Range"] = f"bytes {first}-{last}/{size}"
            data, status = data[first : last + 1], 206
    if head:
        return Answer(200, b"", {**common, "Content-Length": str(len(stored.data))})
    return Answer(status, data, common)


def _list_v2(objects: dict[str, StoredObject], query: Mapping[str, str]) -> Answer:
    prefix = query.get("prefix", "")
    after = query.get("continuation-token") or query.get("start-after", "")
    limit = min(int(query.get("max-keys", "100") or 100), MAX_KEYS)
    keys = sorted(k for k in objects if k.startswith(prefix) and k > after)
    page, truncated = keys[:limit], len(keys) > limit
    encode = query.get("encoding-type") == "url"

    def shown(text: str) -> str:
        return quote(text, safe="") if encode else escape(text)

    contents = "".join(
        f"<Contents><Key>{shown(k)}</Key><LastModified>"
        f"{datetime.fromtimestamp(objects[k].modified, timezone.utc).strftime('%Y-%m-%dT%H:%M:%S.000Z')}"
        f'</LastModified><ETag>"{objects[k].etag}"</ETag><Type>Normal</Type><Size>{len(objects[k].data)}'
        f"</Size><StorageClass>Standard</StorageClass></Contents>"
        for k in page
    )
    next_token = f"<NextContinuationToken>{shown(page[-1])}</NextContinuationToken>" if truncated else ""
    document = (
        f"<ListBucketResult><Prefix>{shown(prefix)}</Prefix><MaxKeys>{limit}</MaxKeys>"
        f"<KeyCount>{len(page)}</KeyCount><IsTruncated>{str(truncated).lower()}</IsTruncated>"
        f"{'<EncodingType>url</EncodingType>' if encode else ''}{next_token}{contents}</ListBucketResult>"
    )
    return _xml(document)


def _xml(document: str) -> Answer:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n' + document).encode()
    return Answer(200, body, {"Content-Type": "application/xml"})


def _error(error: OssError, bucket: str, *, head: bool) -> Answer:
    request_id = uuid.uuid4().hex[:24].upper()
    document = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{error.code}</Code>'
        f"<Message>{escape(error.message)}</Message><RequestId>{request_id}</RequestId>"
        f"<HostId>{escape(bucket)}.oss-cn-shanghai.aliyuncs.com</HostId></Error>"
    )
    body = b"" if head else document.encode()
    return Answer(error.status, body, {"Content-Type": "application/xml", "x-oss-request-id": request_id})


def _handler(server: OssServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":  # oss2 streams some bodies
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():  # trailers, then the blank line
                pass
            return b"".join(chunks)

        def _serve(self) -> None:
            body = self._body()
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = server.answer(self.command, self.path, headers, body)
            server.requests.append((self.command, self.path, answer.status))
            self.send_response(answer.status)
            answer.headers.setdefault("x-oss-request-id", uuid.uuid4().hex[:24].upper())
            for name, value in answer.headers.items():
                if name != "Content-Length":
                    self.send_header(name, value)
            self.send_header("Content-Length", answer.headers.get("Content-Length", str(len(answer.body))))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    return Handler
