"""Where a function's AccessKey comes from: the FC context first, the environment second.

On FC python3.10 the function role's STS key is `context.credentials`; on python3.12 it is only in
`ALIBABA_CLOUD_ACCESS_KEY_ID` / `ALIBABA_CLOUD_ACCESS_KEY_SECRET` / `ALIBABA_CLOUD_SECURITY_TOKEN`.
"""

from __future__ import annotations

from collections.abc import Mapping

from segflow.errors import ConfigError
from segflow.signing import Credentials

ENV_ACCESS_KEY_ID = "ALIBABA_CLOUD_ACCESS_KEY_ID"
ENV_ACCESS_KEY_SECRET = "ALIBABA_CLOUD_ACCESS_KEY_SECRET"
ENV_SECURITY_TOKEN = "ALIBABA_CLOUD_SECURITY_TOKEN"


def credentials_from_context(context: object | None, environ: Mapping[str, str]) -> Credentials:
    """The FC context's role credentials, else the `ALIBABA_CLOUD_*` variables, else `ConfigError`.

    A context whose credentials are incomplete (no id or no secret) does not count; the environment
    is tried next. Empty strings count as unset.
    """
    from_context = _from_context(context)
    if from_context is not None:
        return from_context
    key_id = environ.get(ENV_ACCESS_KEY_ID, "").strip()
    secret = environ.get(ENV_ACCESS_KEY_SECRET, "").strip()
    if key_id and secret:
        token = environ.get(ENV_SECURITY_TOKEN, "").strip() or None
        return Credentials(key_id, secret, token)
    raise ConfigError(
        "no AccessKey: the FC context has no credentials (give the function a role) and "
        f"{ENV_ACCESS_KEY_ID} / {ENV_ACCESS_KEY_SECRET} are not set "
        f"({ENV_SECURITY_TOKEN} too for an STS key)"
    )


def _from_context(context: object | None) -> Credentials | None:
    creds = getattr(context, "credentials", None) if context is not None else None
    if creds is None:
        return None
    key_id = _text(getattr(creds, "access_key_id", None))
    secret = _text(getattr(creds, "access_key_secret", None))
    if not key_id or not secret:
        return None
    return Credentials(key_id, secret, _text(getattr(creds, "security_token", None)) or None)


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""
