"""The URL an input is handed to the service with: the one rule both services (submit, resubmit) use.

- `SEGFLOW_INPUT_URL=upload` (default): imageseg/videoseg get the input the way the official SDK's
  `*_advance` methods hand them any file — `AuthorizeFileUpload`, a form POST of the object to the
  service's own temporary bucket, then that object's URL (`segflow.tempupload`). It works on every account:
  since 2025-03-20, new accounts' buckets refuse data requests on the default public domain, and the
  `-internal` domain only answers inside Alibaba's network.
- `SEGFLOW_INPUT_URL=presign`: a presigned GET of the object on `SEGFLOW_PRESIGN_ENDPOINT` (a custom
  domain bound to the bucket; unset, the bucket region's public default domain).
- PicWish, a Marketplace API outside the vision platform, always gets a presigned URL: `AuthorizeFileUpload`
  only grants uploads for the vision platform's products.

Only a service that reads the user's bucket cares where that bucket is (imageseg/videoseg only read OSS in
their own region): `service_reads_bucket` tells the region check when it applies.
"""

from __future__ import annotations

from segflow.catalogue import Action
from segflow.services.deps import Deps
from segflow.settings import Settings
from segflow.storage.base import Storage

UPLOAD = "upload"
PRESIGN = "presign"
UPLOADABLE_PRODUCTS = frozenset({"imageseg", "videoseg"})


def service_reads_bucket(settings: Settings, action: Action) -> bool:
    """Whether the service fetches the input from the user's bucket (a presigned URL), rather than from its
    own temporary bucket; only then does the bucket's region matter to it."""
    return settings.input_url == PRESIGN or action.product not in UPLOADABLE_PRODUCTS


def input_url(deps: Deps, storage: Storage, key: str, action: Action) -> str:
    """The URL `action` is called with for object `key` of `storage` (uploads it first on the upload path)."""
    settings = deps.settings
    if service_reads_bucket(settings, action):
        return storage.presign_get(key, settings.presign_seconds)
    from segflow.tempupload import upload_input  # on first use: the handlers' import stays light

    return upload_input(deps.vision, storage, key, product=action.product, region_id=settings.region)
