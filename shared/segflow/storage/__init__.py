"""Object storage: the `Storage` port and its adapters.

`storage_for(settings, bucket, context)` picks the adapter: `LocalDirStorage` when
`SEGFLOW_LOCAL_BUCKET_DIR` is set (local invoke, `segflow run`, tests), otherwise `OssStorage`. The oss2
adapter is imported only when it is chosen, so importing this package never loads oss2.
"""

from __future__ import annotations

from segflow.settings import Settings
from segflow.storage.base import ObjectInfo, ReadAt, Storage
from segflow.storage.local import LocalDirStorage, LocalPresignServer

__all__ = ["LocalDirStorage", "LocalPresignServer", "ObjectInfo", "ReadAt", "Storage", "storage_for"]


def storage_for(
    settings: Settings, bucket: str, context: object | None = None, *, region: str | None = None
) -> Storage:
    """The storage of `bucket`. `context` is FC's handler context (its `credentials` on python3.10);
    `region` is the bucket's region when known (from the event), which picks the OSS endpoint."""
    if settings.local_bucket_dir is not None:
        return LocalDirStorage(settings.local_bucket_dir, bucket)
    from segflow.storage.oss import oss_storage_from_settings  # lazy: keeps oss2 out of imports

    return oss_storage_from_settings(settings, bucket, context, region=region)
