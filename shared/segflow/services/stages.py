"""The values one upload passes through, each made whole by one step and taken by the next (`Located` →
`Identified` → `Claimed`, shared/ARCHITECTURE.md, "One owner for a paid call"), `Refusal` (what fails before
any record: a failure record to publish) and `RecordOutcome` (how an event record ended).
"""

from __future__ import annotations

import logging
from typing import Any

from segflow.catalogue import Action
from segflow.errors import SegflowError
from segflow.events import OssRecord
from segflow.media import MediaInfo
from segflow.records import JobRecord, RecordStore
from segflow.routing import Route
from segflow.services.publish import Version
from segflow.states import Outcome, Outcomes
from segflow.storage.base import ObjectInfo, Storage
from segflow.values import Value


class RecordOutcome(Value):
    """How one record of an event ended (logged as one JSON line, counted in the summary)."""

    outcome: Outcome
    bucket: str | None = None
    key: str | None = None
    action: str | None = None
    code: str | None = None
    request_id: str | None = None
    detail: str | None = None
    error: SegflowError | None = None

    def fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "bucket": self.bucket,
            "key": self.key,
            "action": self.action,
            "outcome": self.outcome,
            "code": self.code,
            "request_id": self.request_id,
        }
        if self.detail:
            out["detail"] = self.detail
        return out

    @property
    def level(self) -> int:
        return (
            logging.WARNING
            if self.outcome in (Outcomes.FAILED, Outcomes.RETRY, Outcomes.FAULT)
            else logging.INFO
        )


def ended(
    outcome: Outcome,
    bucket: str,
    key: str,
    action: str | None = None,
    error: SegflowError | None = None,
    **fields: Any,
) -> RecordOutcome:
    """The outcome of an object, with the error's code and request id unless `fields` say otherwise."""
    if error is not None:
        fields.setdefault("code", error.code)
        fields.setdefault("request_id", error.request_id)
    return RecordOutcome(outcome, bucket, key, action, error=error, **fields)


class Located(Value):
    """The object an event record names: the key read (the one every check applied to) and its HEAD."""

    event: OssRecord
    storage: Storage
    key: str
    info: ObjectInfo

    @property
    def version(self) -> Version:
        return Version(self.key, self.info.etag)


class Refusal(Value):
    """Why `located` cannot go through its action, found before any record: its failure record."""

    located: Located
    error: SegflowError
    action: str | None


class Identified(Value):
    """A located object with what it is and where it goes; a RefineMask image has its mask beside it."""

    event: OssRecord
    storage: Storage
    key: str
    info: ObjectInfo
    media: MediaInfo
    route: Route
    action: Action
    mask: ObjectInfo | None = None

    @property
    def located(self) -> Located:
        return Located(self.event, self.storage, self.key, self.info)

    @property
    def etag(self) -> str:
        """The ETag its record is keyed on: both ETags for a pair."""
        return self.info.etag if self.mask is None else f"{self.info.etag}+{self.mask.etag}"

    def outcome(self, outcome: Outcome, error: SegflowError | None = None, **fields: Any) -> RecordOutcome:
        return ended(outcome, self.storage.bucket, self.key, self.action.name, error, **fields)


class Claimed(Value):
    """An identified object whose idempotency record this invocation holds."""

    item: Identified
    records: RecordStore
    job: JobRecord
