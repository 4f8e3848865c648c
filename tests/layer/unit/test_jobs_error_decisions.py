"""Retry or record: how the services classify errors (issue 3, "Errors"), decided by code and status."""

from __future__ import annotations

import pytest

from segflow.errors import (
    ApiConnectionError,
    ApiError,
    ConfigError,
    InputValidationError,
    JobFailedError,
    ObjectNotFoundError,
    ResultDownloadError,
    SegflowError,
    StorageError,
    UnknownActionError,
)
from segflow.failure_policy import RecordInProgressError, is_deployment_error, is_retryable_failure


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (ApiError("slow down", code="Throttling.User", http_status=400), True),
        (ApiError("busy", code="InternalServerError.Busy", http_status=500), True),
        (ApiError("gateway", code="InternalError", http_status=503), True),
        (ApiConnectionError("reset"), True),
        (ApiError("bad image", code="InvalidImage.Content", http_status=400), False),
        (ApiError("region", code="InvalidImage.Region", http_status=400), False),
        (ApiError("not bought", code="InvalidApi.NotPurchase", http_status=403), False),
        (ResultDownloadError("broke", http_status=502), True),
        (ResultDownloadError("expired twice", code="ResultExpired", http_status=403), False),
        (ResultDownloadError("huge", code="ResultTooLarge"), False),
        (StorageError("oss 503", http_status=503), True),
        (StorageError("oss timeout"), True),
        (StorageError("bad key", code="InvalidObjectName", http_status=400), False),
        (StorageError("denied", code="AccessDenied", http_status=403), False),
        (ObjectNotFoundError("gone"), False),
        (RecordInProgressError("busy elsewhere"), True),
        (InputValidationError("too big", code="InvalidImage.Resolution"), False),
        (UnknownActionError("no such action"), False),
        (JobFailedError("ended badly", code="PROCESS_FAILED"), False),
    ],
    ids=lambda v: v.code if isinstance(v, SegflowError) else str(v),
)
def test_retry_decision_follows_code_and_status(error: SegflowError, retry: bool) -> None:
    assert is_retryable_failure(error) is retry


@pytest.mark.parametrize(
    ("error", "deployment"),
    [
        (ApiError("no key", code="InvalidAccessKeyId.NotFound", http_status=404), True),
        (ApiError("sts", code="InvalidSecurityToken.Expired", http_status=400), True),
        (ApiError("sig", code="SignatureDoesNotMatch", http_status=400), True),
        (ApiError("ram", code="Forbidden.RAM", http_status=403), True),
        (ApiError("clock", code="InvalidTimeStamp.Expired", http_status=400), True),
        (ConfigError("no credentials"), True),
        (ApiError("job", code="InvalidParameter", http_status=400), False),
        (ResultDownloadError("expired", code="ResultExpired", http_status=403), False),
    ],
    ids=lambda v: v.code if isinstance(v, SegflowError) else str(v),
)
def test_collector_tells_deployment_errors_from_job_errors(error: SegflowError, deployment: bool) -> None:
    assert is_deployment_error(error) is deployment
