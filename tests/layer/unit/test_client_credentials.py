"""Credentials from the FC context (python3.10) or ALIBABA_CLOUD_* variables (python3.12): FC docs,
Python runtime."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from segflow.credentials import credentials_from_context
from segflow.errors import ConfigError
from segflow.signing import Credentials

ENV = {
    "ALIBABA_CLOUD_ACCESS_KEY_ID": "env-id",
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret",
    "ALIBABA_CLOUD_SECURITY_TOKEN": "env-token",
}


def _context(key_id: str | None, secret: str | None, token: str | None) -> SimpleNamespace:
    return SimpleNamespace(
        request_id="r",
        credentials=SimpleNamespace(access_key_id=key_id, access_key_secret=secret, security_token=token),
    )


def test_fc_context_role_credentials_come_first() -> None:
    credentials = credentials_from_context(_context("STS.ctx", "ctx-secret", "ctx-token"), ENV)

    assert credentials == Credentials("STS.ctx", "ctx-secret", "ctx-token")


def test_environment_is_used_when_the_context_has_no_credentials() -> None:
    # python3.12 contexts have no `credentials` attribute at all.
    credentials = credentials_from_context(SimpleNamespace(request_id="r"), ENV)

    assert credentials == Credentials("env-id", "env-secret", "env-token")


def test_no_context_at_all_reads_the_environment() -> None:
    env = {k: v for k, v in ENV.items() if k != "ALIBABA_CLOUD_SECURITY_TOKEN"}

    assert credentials_from_context(None, env) == Credentials("env-id", "env-secret", None)


def test_incomplete_context_credentials_fall_back_to_the_environment() -> None:
    assert credentials_from_context(_context("id", "", None), ENV).access_key_id == "env-id"


def test_empty_token_counts_as_no_token() -> None:
    assert credentials_from_context(_context("id", "secret", ""), {}).security_token is None
    env = {**ENV, "ALIBABA_CLOUD_SECURITY_TOKEN": ""}
    assert credentials_from_context(None, env).security_token is None


def test_missing_credentials_name_the_variables_to_set() -> None:
    with pytest.raises(ConfigError) as caught:
        credentials_from_context(SimpleNamespace(), {"ALIBABA_CLOUD_ACCESS_KEY_ID": "only-id"})

    text = str(caught.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in text
    assert "ALIBABA_CLOUD_ACCESS_KEY_SECRET" in text
    assert "ALIBABA_CLOUD_SECURITY_TOKEN" in text


def test_credentials_text_never_shows_the_secret_or_token() -> None:
    credentials = credentials_from_context(_context("STS.ctx", "ctx-secret", "ctx-token"), {})

    for text in (repr(credentials), str(credentials)):
        assert "ctx-secret" not in text
        assert "ctx-token" not in text
