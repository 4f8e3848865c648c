"""What both services share: calling the chosen action, safe error messages, the failure document."""

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

# PicWish takes an `image_url` of at most 512 characters (PicWish API, "image_url").
PICWISH_MAX_URL = 512
# The service answers these with its own string-to-sign, which carries the AccessKeyId and the STS token.
SIGNATURE_CODES = frozenset({"SignatureDoesNotMatch", "IncompleteSignature"})


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
