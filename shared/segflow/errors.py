"""One error hierarchy for segflow.

Every error carries the documented `Code` (the one the service would return, where there is one),
the HTTP status and the ids the service gave. Whether an error is worth retrying is decided from
`segflow.retry.RETRY_TABLE` by code and status, never from message text.
"""

from __future__ import annotations


class SegflowError(Exception):
    """Base of every error segflow raises on purpose."""

    default_code = "InternalError"
    default_status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        host_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.http_status = http_status if http_status is not None else self.default_status
        self.request_id = request_id
        self.host_id = host_id

    def __str__(self) -> str:
        parts = [f"{self.code}: {self.message}"]
        if self.http_status is not None:
            parts.append(f"(HTTP {self.http_status})")
        if self.request_id:
            parts.append(f"[RequestId {self.request_id}]")
        return " ".join(parts)

    def to_record(self) -> dict[str, object]:
        """The fields a failure record or a log line stores about this error."""
        return {
            "code": self.code,
            "message": self.message,
            "http_status": self.http_status,
            "request_id": self.request_id,
            "host_id": self.host_id,
        }


class ConfigError(SegflowError):
    """The configuration (environment, rules, credentials) is missing or invalid."""

    default_code = "InvalidConfiguration"


class UnknownActionError(ConfigError):
    """A rule or a request names an action the catalogue does not have."""

    default_code = "UnsupportedOperation"
    default_status = 400


class InputValidationError(SegflowError):
    """An input violates a documented limit of the action; the code is the service's own."""

    default_code = "InvalidParameter"
    default_status = 400


class EventError(SegflowError):
    """An event payload is malformed or lacks a required field."""

    default_code = "InvalidEvent"


class SigningError(SegflowError):
    """A request's signature, key, timestamp or nonce is refused (server-side verification)."""

    default_code = "SignatureDoesNotMatch"
    default_status = 400


class ApiError(SegflowError):
    """The vision API (imageseg, videoseg or PicWish) answered with an error."""

    default_code = "InternalError"


class ApiConnectionError(ApiError):
    """The API could not be reached or the connection broke; always worth a retry."""

    default_code = "ConnectionError"


class TempUploadError(ApiError):
    """The vision platform's temporary bucket refused an input upload (OSS PostObject: an expired policy,
    a refused signature, a file too large): about this upload, never about the deployment."""

    default_code = "AccessDenied"


class JobFailedError(ApiError):
    """An asynchronous job ended in PROCESS_FAILED, TIMEOUT_FAILED or LIMIT_RETRY_FAILED."""

    default_code = "JobFailed"


class ResultDownloadError(SegflowError):
    """A result URL could not be downloaded (expired: 403/404, or the transfer broke)."""

    default_code = "ResultDownloadFailed"


class StorageError(SegflowError):
    """The object storage failed."""

    default_code = "StorageError"


class ObjectNotFoundError(StorageError):
    """The object does not exist (any more)."""

    default_code = "NoSuchKey"
    default_status = 404


class ObjectExistsError(StorageError):
    """A put-if-absent found the object already there."""

    default_code = "FileAlreadyExists"
    default_status = 409


class DeadlineError(SegflowError):
    """The invocation is about to reach its function timeout: the work is left for a later run."""

    default_code = "DeadlineNear"
