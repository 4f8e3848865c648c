"""Who may call the engine: AccessKey pairs for the RPC APIs and AppCodes for PicWish.

Key pairs come from `SEGFLOW_ENGINE_ACCESS_KEYS="id:secret,id2:secret2"`, AppCodes from
`SEGFLOW_ENGINE_APPCODES="code1,code2"`. When either is unset a random development value is made so the
engine is never open to anyone who can reach the port; `segflow engine` prints it at start-up.
Signature checks are the layer's `verify_request`; this module only owns the keys and the one nonce cache
a server needs so a replayed request is refused across all its threads.

Behind Function Compute's HTTP trigger with `authType: function` the gateway has checked each request's
signature before it reaches the engine (FC, "Configure signature authentication for HTTP triggers"), and
the callers sign with their own roles' keys, which the engine cannot know: `SEGFLOW_ENGINE_AUTH=fc-gateway`
makes the engine trust the gateway (`GatewayTrust`). That setting opens the engine to anyone who can reach
its port, so it is refused outside Function Compute (`gateway_trusted`). The key check stays the default,
and the fallback for a trigger with `authType: anonymous`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from segflow.errors import ConfigError
from segflow_engine.verify import NonceCache, VerifiedRequest, trusted_request, verify_request

ACCESS_KEYS_ENV = "SEGFLOW_ENGINE_ACCESS_KEYS"
APPCODES_ENV = "SEGFLOW_ENGINE_APPCODES"
DEV_KEY_PREFIX = "SEGFLOWDEV"
AUTH_ENV = "SEGFLOW_ENGINE_AUTH"
AUTH_KEYS = "keys"
AUTH_FC_GATEWAY = "fc-gateway"
# Set by Function Compute in every instance ("Environment variables": FC_FUNCTION_NAME, FC_REGION).
FC_MARKERS = ("FC_FUNCTION_NAME", "FC_REGION")


def gateway_trusted(environ: Mapping[str, str]) -> bool:
    """Whether `SEGFLOW_ENGINE_AUTH` says to trust FC's gateway (`fc-gateway`) or to check keys (`keys`,
    the default); `ConfigError` for another value, or for `fc-gateway` outside Function Compute."""
    mode = environ.get(AUTH_ENV, "").strip().lower() or AUTH_KEYS
    if mode not in (AUTH_KEYS, AUTH_FC_GATEWAY):
        raise ConfigError(f"{AUTH_ENV}={mode!r}: use {AUTH_KEYS} or {AUTH_FC_GATEWAY}")
    if mode == AUTH_FC_GATEWAY and not all(environ.get(name, "").strip() for name in FC_MARKERS):
        raise ConfigError(
            f"{AUTH_ENV}={AUTH_FC_GATEWAY} trusts Function Compute's HTTP trigger to check every signature, "
            f"and this is not Function Compute ({' and '.join(FC_MARKERS)} are not set): the engine would "
            "take unsigned calls from anyone who reaches its port. Unset it to check keys."
        )
    return mode == AUTH_FC_GATEWAY


@dataclass(frozen=True)
class EngineCredentials:
    """The key pairs and AppCodes the engine accepts. `generated` says which were made up at start-up."""

    access_keys: Mapping[str, str]
    appcodes: frozenset[str]
    generated_keys: bool = False
    generated_appcodes: bool = False

    def __repr__(self) -> str:  # never show a secret or an AppCode
        return (
            f"EngineCredentials(access_key_ids={sorted(self.access_keys)!r}, appcodes={len(self.appcodes)}, "
            f"generated_keys={self.generated_keys}, generated_appcodes={self.generated_appcodes})"
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> EngineCredentials:
        keys = parse_access_keys(environ.get(ACCESS_KEYS_ENV, ""))
        appcodes = parse_appcodes(environ.get(APPCODES_ENV, ""))
        return cls.build(keys, appcodes)

    @classmethod
    def build(
        cls, access_keys: Mapping[str, str] | None = None, appcodes: frozenset[str] | set[str] | None = None
    ) -> EngineCredentials:
        """Fills in a random development key pair / AppCode for whichever is missing."""
        generated_keys = not access_keys
        generated_appcodes = not appcodes
        keys = dict(access_keys) if access_keys else dev_access_keys()
        codes = frozenset(appcodes) if appcodes else frozenset({secrets.token_hex(16)})
        return cls(keys, codes, generated_keys, generated_appcodes)

    @property
    def first_key(self) -> tuple[str, str]:
        access_key_id = next(iter(self.access_keys))
        return access_key_id, self.access_keys[access_key_id]

    @property
    def first_appcode(self) -> str:
        return sorted(self.appcodes)[0]


def dev_access_keys() -> dict[str, str]:
    return {f"{DEV_KEY_PREFIX}{secrets.token_hex(6).upper()}": secrets.token_urlsafe(24)}


def parse_access_keys(text: str) -> dict[str, str]:
    """`id:secret,id2:secret2` → {id: secret}; whitespace around items is ignored."""
    keys: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        access_key_id, sep, secret = item.partition(":")
        if not sep or not access_key_id.strip() or not secret.strip():
            raise ConfigError(
                f"{ACCESS_KEYS_ENV} must look like 'id:secret,id2:secret2'; an item has no id or secret"
            )
        keys[access_key_id.strip()] = secret.strip()
    return keys


def parse_appcodes(text: str) -> frozenset[str]:
    return frozenset(code.strip() for code in text.split(",") if code.strip())


@dataclass
class Authenticator:
    """Verifies RPC signatures (v1 and v3) and PicWish AppCodes for one server."""

    credentials: EngineCredentials
    nonces: NonceCache = field(default_factory=NonceCache)
    max_skew_seconds: float = 900

    def lookup_secret(self, access_key_id: str) -> str | None:
        return self.credentials.access_keys.get(access_key_id)

    def verify_rpc(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: datetime | None = None,
    ) -> VerifiedRequest:
        """The business parameters of a correctly signed request; raises `SigningError` otherwise."""
        return verify_request(
            method,
            path,
            query,
            headers,
            body,
            self.lookup_secret,
            nonces=self.nonces,
            now=now,
            max_skew_seconds=self.max_skew_seconds,
        )

    def appcode_accepted(self, authorization: str | None) -> bool:
        """`Authorization: APPCODE <code>` with a known code (compared in constant time)."""
        if not authorization:
            return False
        scheme, _, code = authorization.strip().partition(" ")
        code = code.strip()
        if scheme.upper() != "APPCODE" or not code:
            return False
        # Compare against every code so the time taken says nothing about which one is close.
        matched = False
        for known in self.credentials.appcodes:
            matched |= hmac.compare_digest(known.encode("utf-8"), code.encode("utf-8"))
        return matched


class GatewayTrust:
    """The engine behind FC's HTTP trigger with `authType: function`: the gateway verified the caller, so
    a request's parameters are read as signed, and any PicWish caller is let in (see the module
    docstring)."""

    def verify_rpc(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Mapping[str, str],
        body: bytes,
        *,
        now: datetime | None = None,
    ) -> VerifiedRequest:
        return trusted_request(query, headers, body)

    def appcode_accepted(self, authorization: str | None) -> bool:
        return True
