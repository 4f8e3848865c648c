"""The URL an input is handed to the service with (placeholder until the input paths land)."""

from __future__ import annotations

from segflow.catalogue import Action
from segflow.services.deps import Deps
from segflow.storage.base import Storage


def input_url(deps: Deps, storage: Storage, key: str, action: Action) -> str:
    return storage.presign_get(key, deps.settings.presign_seconds)
