"""What both services share: the URL an input is handed over with, calling the chosen action, safe error
messages, the failure document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from segflow.catalogue import Action
from segflow.errors import InputValidationError, SegflowError
from segflow.outputs import failure_document
from segflow.records import JobRecord
from segflow.results import SegmentResult
from segflow.services.deps import Deps
from segflow.services.publish import Version
from segflow.settings import Settings
from segflow.storage.base import Storage

# PicWish takes an `image_url` of at most 512 characters (PicWish API, "image_url").
PICWISH_MAX_URL = 512
# The service answers these with its own string-to-sign, which carries the AccessKeyId and the STS token.
SIGNATURE_CODES = frozenset({"SignatureDoesNotMatch", "IncompleteSignature"})


# -- the input URL -----------------------------------------------------------------------------------

UPLOAD = "upload"
PRESIGN = "presign"
UPLOADABLE_PRODUCTS = frozenset({"imageseg", "videoseg"})


def service_reads_bucket(settings: Settings, action: Action) -> bool:
    """Whether the service fetches the input from the user's bucket (a presigned URL), rather than from its
    own temporary bucket; only then does the bucket's region matter to it (imageseg/videoseg only read OSS
    in their own region)."""
    return settings.input_url == PRESIGN or action.product not in UPLOADABLE_PRODUCTS


def input_url(deps: Deps, storage: Storage, key: str, action: Action) -> str:
    """The URL `action` is called with for object `key` of `storage`: the one rule both services (submit,
    resubmit) use.

    - `SEGFLOW_INPUT_URL=upload` (default): imageseg/videoseg get the input the way the official SDK's
      `*_advance` methods hand them any file — `AuthorizeFileUpload`, a form POST of the object to the
      service's own temporary bucket, then that object's URL (`segflow.tempupload`). It works on every
      account: since 2025-03-20, new accounts' buckets refuse data requests on the default public domain,
      and the `-internal` domain only answers inside Alibaba's network.
    - `SEGFLOW_INPUT_URL=presign`: a presigned GET of the object on `SEGFLOW_PRESIGN_ENDPOINT` (a custom
      domain bound to the bucket; unset, the bucket region's public default domain).
    - PicWish, a Marketplace API outside the vision platform, always gets a presigned URL:
      `AuthorizeFileUpload` only grants uploads for the vision platform's products.
    """
    settings = deps.settings
    if service_reads_bucket(settings, action):
        return storage.presign_get(key, settings.presign_seconds)
    from segflow.tempupload import upload_input  # on first use: the handlers' import stays light

    return upload_input(deps.vision, storage, key, product=action.product, region_id=settings.region)


# -- the call ----------------------------------------------------------------------------------------


def call_action(deps: Deps, action: Action, url: str, params: Mapping[str, str]) -> SegmentResult:
    """One segmentation call to imageseg/videoseg or PicWish (rate limited and retried inside)."""
    if action.product == "picwish":
        if len(url) > PICWISH_MAX_URL:
            # PicWish refuses longer image_url values; an OSS URL presigned with an STS token (as inside
            # FC) easily passes 512 characters.
            raise InputValidationError(
                f"PicWish takes an image_url of at most {PICWISH_MAX_URL} characters; the presigned URL of "
                f"this object has {len(url)} (STS-signed OSS URLs are long: use a shorter key or imageseg)",
                code="InvalidParameter",
                http_status=400,
            )
        client = deps.picwish_client()
        return client.segment(
            url,
            type=params.get("type", ""),
            output_type=_int_param(params, "output_type", 2),
            crop=_int_param(params, "crop", 0),
            format=params.get("format", "png"),
            bg_color=params.get("bg_color") or None,
        )
    return deps.vision.segment(action.name, url, params)


def _int_param(params: Mapping[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise InputValidationError(f"PicWish {name} must be an integer, got {value!r}") from exc


def safe_message(deps: Deps, error: SegflowError) -> str:
    """The error's message as it may be stored or logged: never a secret, token or signature."""
    if error.code in SIGNATURE_CODES:
        return (
            "the service refused the request signature; its message (which echoes the string to sign, "
            "credentials included) is not kept. Check the AccessKey, the clock and SEGFLOW_SIGNATURE_VERSION."
        )
    from segflow.logs import redact

    return redact(error.message, deps.secrets())


def error_record(deps: Deps, error: SegflowError) -> dict[str, object]:
    """`error.to_record()` with the message made safe to store in a job record."""
    record = error.to_record()
    record["message"] = safe_message(deps, error)
    return record


def failure_record(
    deps: Deps,
    bucket: str,
    version: Version,
    *,
    action: str | None,
    error: SegflowError,
    record: JobRecord | None = None,
    fault: bool = False,
) -> dict[str, Any]:
    """The failure record of one version (`<failed>/<source key>.json`, written by `services.publish`).
    `fault`: a deployment fault, the object stays retryable and the record says so."""
    document = failure_document(
        bucket=bucket,
        key=version.key,
        etag=version.etag if record is None else record.etag,
        action=action,
        error=error,
        at=deps.clock(),
        message=safe_message(deps, error),
    )
    if fault:
        document["Fault"] = True
        document["Retryable"] = True
    if record is not None:
        document["RecordId"] = record.record_id
        document["JobId"] = record.payload.job_id
    return document
