"""OSS PostObject for the loopback OSS server (tests/support/oss_server.py): a form upload authorised by a
signed policy instead of a signed request.

From OSS's API reference, "PostObject" and "Post Policy" (https://www.alibabacloud.com/help/en/oss/
developer-reference/postobject), V1 signatures only:
- `multipart/form-data` to `/<bucket>/` (path-style on an IP endpoint); the text fields first, `file` last;
  field names are case-insensitive;
- `OSSAccessKeyId`, `policy` (Base64 JSON with `expiration` and `conditions`) and `Signature` =
  Base64(HMAC-SHA1(AccessKeySecret, policy)); an STS key also sends `x-oss-security-token` (OSS error
  0002-00000003: an STS AccessKeyId without its token is refused);
- the policy's conditions are met: `{"bucket": …}`, `["starts-with", "$key", prefix]`, `["eq", "$key", …]`,
  `["content-length-range", min, max]`; else 403 AccessDenied "Invalid according to Policy: Policy Condition
  failed", an expired policy 403 AccessDenied "Invalid according to Policy: Policy expired.", a file over
  or under the range 400 EntityTooLarge / EntityTooSmall;
- `success_action_status` 200, 201 (with a `PostResponse` XML body) or 204 (the default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, NamedTuple

POLICY_EXPIRED = "Invalid according to Policy: Policy expired."
CONDITION_FAILED = "Invalid according to Policy: Policy Condition failed"


class PostRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class PostedFile(NamedTuple):
    key: str
    data: bytes
    content_type: str
    success_status: int


def read_form(content_type: str, body: bytes) -> tuple[dict[str, str], bytes, str]:
    """The text fields (names lower-cased), the file and its Content-Type, from a multipart body."""
    boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"').encode()
    if not content_type.lower().startswith("multipart/form-data") or not boundary:
        raise PostRefused(400, "MalformedPOSTRequest", "The body of your POST request is not well-formed.")
    fields: dict[str, str] = {}
    for segment in (b"\r\n" + body).split(b"\r\n--" + boundary)[1:]:
        if segment.startswith(b"--"):
            break
        head, _, content = segment.partition(b"\r\n\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in head.decode().split("\r\n") if line)
        )
        name = headers.get("content-disposition", "").partition('name="')[2].partition('"')[0].lower()
        if name == "file":
            return fields, content, headers.get("content-type", "")
        fields[name] = content.decode("utf-8")
    raise PostRefused(400, "InvalidArgument", "The form has no file field.")


def check_post(
    bucket: str, fields: Mapping[str, str], size: int, keys: Mapping[str, tuple[str, str | None]]
) -> str:
    """The object key the form may write; `PostRefused` as OSS refuses (module docstring)."""
    for name in ("ossaccesskeyid", "policy", "signature", "key"):
        if not fields.get(name):
            raise PostRefused(403, "AccessDenied", f"the form has no {name} field")
    known = keys.get(fields["ossaccesskeyid"])
    if known is None:
        raise PostRefused(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.")
    secret, token = known
    if token is not None and fields.get("x-oss-security-token") != token:
        raise PostRefused(403, "InvalidAccessKeyId", "The security token you provided is invalid.")
    expected = base64.b64encode(
        hmac.new(secret.encode(), fields["policy"].encode(), hashlib.sha1).digest()
    ).decode()
    if not hmac.compare_digest(expected, fields["signature"]):
        raise PostRefused(403, "SignatureDoesNotMatch", "The request signature we calculated does not match.")
    policy = _policy(fields["policy"])
    expires = datetime.strptime(str(policy.get("expiration")), "%Y-%m-%dT%H:%M:%S.%fZ")
    if expires.replace(tzinfo=timezone.utc).timestamp() < time.time():
        raise PostRefused(403, "AccessDenied", POLICY_EXPIRED)
    for condition in policy.get("conditions", []):
        _check(condition, bucket, fields["key"], size)
    return fields["key"]


def _policy(encoded: str) -> dict[str, Any]:
    try:
        document = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise PostRefused(
            400, "InvalidPolicyDocument", "The content of the form does not meet the conditions."
        ) from exc
    if not isinstance(document, dict) or "expiration" not in document:
        raise PostRefused(400, "InvalidPolicyDocument", "The policy has no expiration.")
    return document


def _check(condition: Any, bucket: str, key: str, size: int) -> None:
    if isinstance(condition, dict):
        if condition.get("bucket", bucket) != bucket:
            raise PostRefused(403, "AccessDenied", f"{CONDITION_FAILED}: bucket")
        return
    kind = str(condition[0]).lower()
    if kind == "content-length-range":
        if size > int(condition[2]):
            raise PostRefused(400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size.")
        if size < int(condition[1]):
            raise PostRefused(
                400, "EntityTooSmall", "Your proposed upload is smaller than the minimum allowed size."
            )
    elif condition[1] == "$key" and not (
        key.startswith(condition[2]) if kind == "starts-with" else key == condition[2]
    ):
        raise PostRefused(403, "AccessDenied", f"{CONDITION_FAILED}: {json.dumps(condition)}")


def success_status(fields: Mapping[str, str]) -> int:
    status = fields.get("success_action_status", "204")
    return int(status) if status in ("200", "201", "204") else 204
