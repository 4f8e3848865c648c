"""Object storage: the `Storage` port and the OSS adapter the functions use.

`storage_for(settings, bucket, context)` gives one bucket's `OssStorage`; oss2 is imported only then, so
importing this package never loads it. The local-directory adapter that `segflow run`, `segflow invoke`
and the tests use lives outside the layer (`segflow_cli.localbucket`) and is handed to the services
through `Deps`.
"""

from __future__ import annotations

from segflow.settings import Settings
from segflow.storage.base import ObjectInfo, ReadAt, Storage

__all__ = ["ObjectInfo", "ReadAt", "Storage", "storage_for"]


def storage_for(
    settings: Settings, bucket: str, context: object | None = None, *, region: str | None = None
) -> Storage:
    """The OSS storage of `bucket`. `context` is FC's handler context (its `credentials` on python3.10);
    `region` is the bucket's region when known (from the event), which picks the OSS endpoint."""
    from segflow.storage.oss import oss_storage_from_settings  # lazy: keeps oss2 out of imports

    return oss_storage_from_settings(settings, bucket, context, region=region)
