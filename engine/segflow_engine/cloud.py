"""The engine's state in OSS, for the engine on Function Compute: any instance answers any request.

Everything lives under one prefix of one bucket (`SEGFLOW_ENGINE_BUCKET`, `SEGFLOW_ENGINE_PREFIX`), the only
place the engine's role may write (ram-policy-engine.json):

    <prefix>results/<result id>/<name>   result files; answers link to presigned GETs that expire as the
                                         service's links do (30 minutes, PicWish 1 hour)
    <prefix>jobs/<job id>/...            asynchronous jobs (`segflow_engine.cloudjobs`)
    <prefix>picwish/<task id>.json       PicWish answers, for GET /tasks/visual/segmentation/<task id>
    <prefix>temp/<random>/<uuid>         the temporary bucket: `AuthorizeFileUpload` grants a form upload
                                         (OSS PostObject) straight into it, so an input never passes
                                         through an instance, never leaves the region, and no bucket is
                                         public

Nothing is deleted by the engine (no work after an answer): an OSS lifecycle rule on the prefix expires it
(docs/engine-on-fc.md). The OSS client is the layer's `OssStorage` (oss2), reached with the function role's
STS key, which FC hands over at start and again with every request (`RoleKeys`).
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from segflow.errors import ObjectNotFoundError
from segflow.signing import Credentials
from segflow.storage.base import Storage
from segflow_engine.backends import Backends, Jobs
from segflow_engine.resultstore import CONTENT_TYPES
from segflow_engine.tempstore import POLICY_SECONDS, PostSigner, authorized_product, largest_input, post_grant

FILE_CHUNK = 1024 * 1024
INPUT_URL_SECONDS = 30 * 60  # how long the presigned GET of an own temporary input lives
_TASK_ID = re.compile(r"^[0-9a-f-]{36}$")


class RoleKeys:
    """The function role's STS key. FC sets it in the environment when an instance starts
    (`ALIBABA_CLOUD_ACCESS_KEY_ID` / `_SECRET` / `_SECURITY_TOKEN`, "Environment variables") and sends a
    current one with every request (`x-fc-access-key-id` / `-secret` / `x-fc-security-token`, "Context and
    log format": "use the temporary credentials in these headers to call other Alibaba Cloud services");
    the newest wins, so a long-lived instance never signs with an expired token."""

    def __init__(self, initial: Credentials) -> None:
        self._current = initial
        self._lock = threading.Lock()

    def current(self) -> Credentials:
        with self._lock:
            return self._current

    def update(self, access_key_id: str, secret: str, token: str) -> None:
        """A key FC sent with a request; an incomplete one is ignored."""
        if not access_key_id or not secret:
            return
        fresh = Credentials(access_key_id, secret, token or None)
        with self._lock:
            self._current = fresh


class EngineBucket:
    """The engine's prefix of its bucket, reached with the role's current key (a client per key)."""

    def __init__(
        self,
        name: str,
        prefix: str,
        endpoint: str,
        keys: RoleKeys,
        *,
        presign_endpoint: str | None = None,
        storage_for: Callable[[Credentials], Storage] | None = None,
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.endpoint = endpoint
        self.presign_endpoint = presign_endpoint or endpoint
        self.keys = keys
        self._storage_for = storage_for or self._oss_storage
        self._cached: tuple[Credentials, Storage] | None = None
        self._lock = threading.Lock()

    @property
    def endpoint_netloc(self) -> str:
        """`host[:port]` of the endpoint, as `AuthorizeFileUpload` names it (no scheme)."""
        return urlsplit(self.endpoint).netloc.lower()

    def key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def storage(self) -> Storage:
        keys = self.keys.current()
        with self._lock:
            if self._cached is None or self._cached[0] != keys:
                self._cached = (keys, self._storage_for(keys))
            return self._cached[1]

    def _oss_storage(self, keys: Credentials) -> Storage:
        from segflow.storage.oss import OssStorage, auth_for  # oss2 loads only for the engine on FC

        return OssStorage(self.name, self.endpoint, auth_for(keys), presign_endpoint=self.presign_endpoint)

    def put_json(self, key: str, document: Mapping[str, Any], *, if_absent: bool = False) -> None:
        body = json.dumps(document, ensure_ascii=False, sort_keys=True).encode("utf-8")
        self.storage().put_bytes(key, body, content_type="application/json", if_absent=if_absent)

    def get_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at `key`, or None when there is none."""
        try:
            document = json.loads(self.storage().get_bytes(key))
        except ObjectNotFoundError:
            return None
        return document if isinstance(document, dict) else None


class Presigned(NamedTuple):
    url: str


def _content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix.lower(), "application/octet-stream")


class OssResults:
    """Result files under `<prefix>results/`, handed out as presigned GETs."""

    def __init__(self, bucket: EngineBucket) -> None:
        self._bucket = bucket

    def new_result_id(self) -> str:
        return secrets.token_hex(16)

    def put_bytes(
        self, name: str, data: bytes, *, ttl_seconds: int, result_id: str | None = None
    ) -> Presigned:
        key = self._bucket.key("results", result_id or self.new_result_id(), name)
        storage = self._bucket.storage()
        storage.put_bytes(key, data, content_type=_content_type(name))
        return Presigned(storage.presign_get(key, ttl_seconds))

    def put_file(
        self, name: str, source: Path, *, ttl_seconds: int, result_id: str | None = None
    ) -> Presigned:
        key = self._bucket.key("results", result_id or self.new_result_id(), name)
        storage = self._bucket.storage()
        with source.open("rb") as handle:
            storage.put_stream(key, _blocks(handle.read), content_type=_content_type(name))
        source.unlink(missing_ok=True)
        return Presigned(storage.presign_get(key, ttl_seconds))


def _blocks(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while block := read(FILE_CHUNK):
        yield block


class OssTasks:
    """PicWish answers as `<prefix>picwish/<task id>.json`."""

    def __init__(self, bucket: EngineBucket) -> None:
        self._bucket = bucket

    def remember(self, task_id: str, data: Mapping[str, Any]) -> None:
        self._bucket.put_json(self._bucket.key("picwish", f"{task_id}.json"), data)

    def recall(self, task_id: str) -> dict[str, Any] | None:
        if not _TASK_ID.match(task_id):
            return None
        return self._bucket.get_json(self._bucket.key("picwish", f"{task_id}.json"))


class OssUploads:
    """`AuthorizeFileUpload` granting a form upload to `<prefix>temp/<random>/` of the engine's bucket,
    signed with the role's key (OSS "PostObject": an STS key's token goes in the `x-oss-security-token`
    field, so the grant carries it as `SecurityToken`)."""

    def __init__(
        self,
        bucket: EngineBucket,
        *,
        clock: Callable[[], float] = time.time,
        policy_seconds: int = POLICY_SECONDS,
    ) -> None:
        self._bucket = bucket
        self._clock = clock
        self._policy_seconds = policy_seconds

    def authorize(self, params: Mapping[str, str]) -> dict[str, Any]:
        product = authorized_product(params)
        keys = self._bucket.keys.current()
        signer = PostSigner(
            self._bucket.name,
            self._bucket.endpoint_netloc,
            keys.access_key_id,
            keys.access_key_secret,
            keys.security_token,
        )
        prefix = self._bucket.key("temp", secrets.token_hex(8)) + "/"
        return post_grant(signer, prefix, largest_input(product), self._clock() + self._policy_seconds)


class OssInputs:
    """An input URL naming an object of the engine's temporary prefix (what a client hands an action after
    uploading to the grant: `http://<bucket>.<endpoint>/<key>`, or path-style for an IP endpoint) is read
    through a presigned GET of it: the bucket is private, as the service's own temporary bucket is to
    everyone but the service."""

    def __init__(self, bucket: EngineBucket) -> None:
        self._bucket = bucket

    def resolve(self, url: str) -> str:
        key = self.own_key(url)
        return url if key is None else self._bucket.storage().presign_get(key, INPUT_URL_SECONDS)

    def own_key(self, url: str) -> str | None:
        try:
            parts = urlsplit(url.strip())
        except ValueError:
            return None
        netloc, path = parts.netloc.lower(), unquote(parts.path)
        bucket = self._bucket.name
        if netloc == f"{bucket}.{self._bucket.endpoint_netloc}":
            key = path[1:]
        elif netloc == self._bucket.endpoint_netloc and path.startswith(f"/{bucket}/"):
            key = path[len(bucket) + 2 :]
        else:
            return None
        inside = key.startswith(self._bucket.key("temp") + "/") and ".." not in key.split("/")
        return key if inside and not parts.query else None


def oss_backends(bucket: EngineBucket, jobs: Jobs) -> Backends:
    """Every home of the engine's state in `bucket` (jobs: `segflow_engine.cloudjobs.CloudJobs`)."""
    return Backends(OssResults(bucket), jobs, OssTasks(bucket), OssUploads(bucket), OssInputs(bucket))
