"""Where an object of a local bucket lives: `<root>/<bucket>/<key>`, and the names a directory can hold.

The one rule for both readers of a local bucket: its storage (`segflow_cli.localbucket`) and the server of
its presigned URLs (`segflow_cli.presign`).
"""

from __future__ import annotations

import re
from pathlib import Path

from segflow.errors import StorageError
from segflow.storage.base import check_key

BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MAX_NAME_BYTES = 255  # a file name's limit on Linux file systems; OSS allows longer key segments


def check_bucket(bucket: str) -> None:
    if not BUCKET_NAME.match(bucket):
        raise StorageError(f"invalid bucket name {bucket!r}", code="InvalidBucketName", http_status=400)


def object_path(bucket_dir: Path, key: str) -> Path:
    """The file that holds `key` under `bucket_dir`; keys that would leave the directory are refused."""
    check_key(key)
    parts = key.split("/")
    too_long = any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts)
    if too_long or any(part in ("", ".", "..") for part in parts) or "\\" in key:
        # OSS accepts these, a file system cannot hold them faithfully: refuse rather than alias.
        raise StorageError(
            f"key {key!r} cannot be stored in a local directory", code="InvalidObjectName", http_status=400
        )
    return bucket_dir.joinpath(*parts)


def bucket_object_path(root: Path, bucket: str, key: str) -> Path:
    """`object_path` of `key` in `bucket` under `root` (the bucket name checked too)."""
    check_bucket(bucket)
    return object_path(Path(root).resolve() / bucket, key)
