"""Logging: one JSON line per record outcome, and redaction of secrets from every log record.

`log_outcome` writes `{"bucket", "key", "action", "outcome", "code", "request_id", "ms", ...}` so FC's log
service can query outcomes by field. `install_redaction(secrets)` makes sure no AccessKey secret, STS
token, `Signature=` value or `Authorization` header reaches a handler, whichever logger emits it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

OUTCOME_FIELDS = ("bucket", "key", "action", "outcome", "code", "request_id", "ms")
MASK = "<redacted>"
_MIN_SECRET_LENGTH = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…  /  OSS ak:sig  /  APPCODE x
    (
        re.compile(r"(?i)(\bauthorization\b['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n]+)"),
        r"\1" + MASK,
    ),
    # Query-string and form signatures (v1 RPC, OSS presigned URLs) and v3 signature parts.
    (re.compile(r"(?i)(\bsignature\b['\"]?\s*[=:]\s*['\"]?)([^&\s'\",;]+)"), r"\1" + MASK),
    # STS tokens and secrets named as parameters, headers, dict keys or attributes.
    (
        re.compile(
            r"(?i)(\b(?:security[-_]?token|x-acs-security-token|x-oss-security-token|"
            r"access[-_]?key[-_]?secret|accesskeysecret|appcode|secret)\b['\"]?\s*[=:]\s*['\"]?)"
            r"([^&\s'\",;)]+)"
        ),
        r"\1" + MASK,
    ),
    # A bare STS token (they start with CAIS and run long) wherever it appears.
    (re.compile(r"\bCAIS[A-Za-z0-9+/=_-]{16,}"), MASK),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secret values and signature/token/authorization values masked."""
    for secret in sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and formatted traceback) with `redact`; never drops a record.
    Idempotent, so several filters (each with its own secrets) may see the same record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        with self._lock:
            self._secrets.update(s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH)

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = tuple(self._secrets)
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format must not lose the record; log what we have
            message = f"{record.msg!r} {record.args!r}"
        record.msg = redact(message, secrets)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


_installed: RedactingFilter | None = None
_install_lock = threading.Lock()


def install_redaction(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Redact every log record of the process from now on, whatever logger or handler it goes through.

    Installed as a log-record factory (so handlers added later, FC's own included, only ever see
    redacted records) and as a filter on the root logger's current handlers. Calling it again adds
    secrets to the same filter."""
    global _installed
    with _install_lock:
        if _installed is None:
            redactor = RedactingFilter(secrets)
            base_factory = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = base_factory(*args, **kwargs)
                redactor.filter(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = redactor
        else:
            _installed.add_secrets(secrets)
        for handler in logging.getLogger().handlers:
            if _installed not in handler.filters:
                handler.addFilter(_installed)
        return _installed


def outcome_line(**fields: Any) -> str:
    """The JSON line `log_outcome` writes: the standard fields first (null when absent), then extras."""
    ordered: dict[str, Any] = {name: fields.pop(name, None) for name in OUTCOME_FIELDS}
    if isinstance(ordered["ms"], float):
        ordered["ms"] = round(ordered["ms"], 1)
    ordered.update(fields)
    return json.dumps(ordered, ensure_ascii=False, default=str, separators=(",", ":"))


def log_outcome(logger: logging.Logger, level: int = logging.INFO, **fields: Any) -> None:
    """One JSON line about one record's outcome (bucket, key, action, outcome, code, request_id, ms)."""
    logger.log(level, "%s", outcome_line(**fields))
