"""Logging: one JSON line per record outcome, and redaction of secrets from every log record.

`log_outcome` writes `{"bucket", "key", "action", "outcome", "code", "request_id", "ms", ...}` so FC's log
service can query outcomes by field. `install_redaction(secrets)` makes sure no AccessKey secret, STS
token, AppCode, `Signature` value or `Authorization` header reaches a handler, whichever logger emits it,
in whatever encoding it was written (`redact`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

OUTCOME_FIELDS = ("bucket", "key", "action", "outcome", "code", "request_id", "ms")
MASK = "<redacted>"
PRINTABLE_CHARS = 1024
"""Longest text from an event that a log line, a summary or a failure record carries (an object key is at
most 1023 bytes; anything longer came from a malformed event)."""
_MIN_SECRET_LENGTH = 6

# A secret travels raw, or percent-encoded once or more (an OSS presigned URL encodes its `Signature` and
# `security-token`; sent as `ImageURL` that URL is encoded again, and urllib3 logs the request line):
# `%` itself may be encoded as `%25`, any number of times, and the hex digits come in either case.
_PCT = r"%(?:25)*"
_EQUALS = rf"(?:[=:]|{_PCT}3[dD])"
_AMPERSAND = rf"(?:&|{_PCT}26)"
# A parameter name starts after a non-name character, or after an encoded `?` or `&` (`%3F`, `%253F`,
# `%26`, … end in `3F` / `26`, so a name glued to them still starts there).
_NAME_START = r"(?:(?<![A-Za-z0-9_])|(?<=3[fF])|(?<=26))"
_SECRET_NAMES = (
    r"signature|security[-_]?token|x-acs-security-token|x-oss-security-token|"
    r"access[-_]?key[-_]?secret|accesskeysecret|appcode|secret"
)
"""Named secrets. An AccessKey ID (`AccessKeyId`, `OSSAccessKeyId`) is left readable: it identifies a key,
signs nothing, and is what one needs to tell which key a refused call used."""

# Words at least one of which every text the named patterns can change contains (the parameter names,
# `authorization`; an STS token starts with `CAIS`): a text without them, like most log lines, is left as
# it is without running, or even compiling, the patterns.
_TRIGGERS = ("signature", "token", "secret", "appcode", "authorization")


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    """The named patterns, compiled on first need (about a millisecond of every cold start otherwise)."""
    return (
        # Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…  /  OSS ak:sig  /  APPCODE
        (
            re.compile(r"(?i)(\bauthorization\b['\"]?\s*[:=]\s*['\"]?)([^'\"\r\n]+)"),
            r"\1" + MASK,
        ),
        # Signatures, STS tokens and secrets named as query or form parameters (raw or encoded, also inside
        # an encoded URL), headers, dict keys or attributes: the value runs to the next (encoded) `&`.
        (
            re.compile(
                rf"(?i){_NAME_START}((?:{_SECRET_NAMES})['\"]?\s*{_EQUALS}\s*['\"]?)"
                rf"(?:(?!{_AMPERSAND})[^&\s'\",;)<>])+"
            ),
            r"\1" + MASK,
        ),
        # A bare STS token (they start with CAIS and run long) wherever it appears, raw or encoded.
        # No word boundary before it: inside an encoded query it follows `%3D`.
        (re.compile(rf"CAIS(?:[A-Za-z0-9+/=_-]|{_PCT}(?:2[bBfF]|3[dD])){{16,}}"), MASK),
    )


def _may_hold_named_secret(text: str) -> bool:
    if "CAIS" in text:
        return True
    lowered = text.lower()
    return any(word in lowered for word in _TRIGGERS)


def _char_forms(char: str) -> str:
    """A regex for one character of a secret as it may be written: raw, or percent-encoded at any depth
    (a space also as `+` or an encoded `+`, a slash also as JSON's `\\/`)."""
    if char.isascii() and (char.isalnum() or char in "-_.~"):
        return re.escape(char)  # unreserved: no encoder changes it
    encoded = "".join(rf"{_PCT}[{b >> 4:X}{b >> 4:x}][{b & 15:X}{b & 15:x}]" for b in char.encode("utf-8"))
    extra = {" ": rf"|\+|{_PCT}2[bB]", "/": r"|\\/"}.get(char, "")  # quote_plus, then quoted again
    return f"(?:{re.escape(char)}|{encoded}{extra})"


@functools.lru_cache(maxsize=16)
def _values_pattern(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    """One regex matching any of the secrets in any encoding (longest first)."""
    if not secrets:
        return None
    alternatives = ["".join(_char_forms(c) for c in secret) for secret in secrets]
    return re.compile("|".join(alternatives))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with known secret values and signature/token/authorization values masked, in every
    encoding: raw, percent-encoded once or more (upper- or lower-case hex), `+` for spaces."""
    known = tuple(
        sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=lambda s: (-len(s), s))
    )
    pattern = _values_pattern(known)
    if pattern is not None:
        text = pattern.sub(MASK, text)
    if _may_hold_named_secret(text):
        for named, replacement in _patterns():
            text = named.sub(replacement, text)
    return text


def redact_known(text: str) -> str:
    """`redact` with the secrets given to `install_redaction` so far (none: the named patterns only)."""
    installed = _installed
    return redact(text, installed.secrets() if installed is not None else ())


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

    def secrets(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self.secrets()
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


def utf8_text(text: str) -> str:
    """`text` with every lone surrogate (which no UTF-8 text holds: a JSON event may carry one as an
    escape) written as a `\\udXXX` escape, so a log handler, FC's response or a stored document can encode
    it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def printable(value: object, limit: int = PRINTABLE_CHARS) -> str:
    """A value read from an event as a log line or a document may hold it: `utf8_text`, at most `limit`
    characters (a longer one ends saying how long it was)."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = f"{text[:limit]}…({len(text)} characters)"
    return utf8_text(text)


def outcome_line(**fields: Any) -> str:
    """The JSON line `log_outcome` writes: the standard fields first (null when absent), then extras."""
    ordered: dict[str, Any] = {name: fields.pop(name, None) for name in OUTCOME_FIELDS}
    if isinstance(ordered["ms"], float):
        ordered["ms"] = round(ordered["ms"], 1)
    ordered.update(fields)
    return utf8_text(json.dumps(ordered, ensure_ascii=False, default=str, separators=(",", ":")))


def log_outcome(logger: logging.Logger, level: int = logging.INFO, **fields: Any) -> None:
    """One JSON line about one record's outcome (bucket, key, action, outcome, code, request_id, ms)."""
    logger.log(level, "%s", outcome_line(**fields))
