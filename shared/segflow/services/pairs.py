"""RefineMask pairs on upload: an image and its coarse mask, paired by name (`routing.Pairing`).

Whichever of the two arrives second triggers the call with both URLs: the image's key names the result
and the idempotency record, whose ETag is both ETags (`<image>+<mask>`), so uploading the same mask again
is a duplicate, not a second call. The first to arrive waits in `<jobs>/pairs/<id>.json`; each upload's
event is delivered after that upload completed, so the later of the two always finds the other. A partner
that never arrives within the rule's `pair_timeout` becomes a failure record of the file that did, naming
the one that is missing (the collector's duty: `expire_waiting`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from segflow.errors import InputValidationError, ObjectNotFoundError, SegflowError
from segflow.media import MediaError, probe_media
from segflow.routing import Pairing, route
from segflow.services.attempt import RecordOutcome, UploadAttempt
from segflow.services.common import write_failure
from segflow.services.deps import Deps
from segflow.states import Outcome
from segflow.storage.base import ObjectInfo, Storage
from segflow.validation import media_error_for_action

MISSING_CODE = "PairMissing"


def pair_id(bucket: str, pairing: Pairing) -> str:
    material = json.dumps([bucket, pairing.folder, pairing.stem], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


def pair(attempt: UploadAttempt) -> RecordOutcome | None:
    """Find the other half; without it, wait (recorded); with it, make the attempt the image's, with the
    mask beside it. None when there is nothing to pair or the pair is complete."""
    pairing = attempt.route.pair if attempt.route is not None else None
    if pairing is None:
        return None
    deps, storage = attempt.deps, attempt.storage
    partner = find_partner(storage, deps, pairing, attempt.key)
    if partner is None:
        missing = pairing.mask_key if pairing.role == "image" else f"{pairing.image_prefix}*"
        _wait(attempt, pairing, missing)
        return attempt.outcome(Outcome.WAITING, detail=f"waiting for {missing}")
    if pairing.role == "mask":
        mask, image = attempt.info, partner
        attempt.key, attempt.info = image.key, image
        try:
            attempt.media = probe_media(storage.reader(image.key), image.size)
        except MediaError as error:
            assert attempt.action is not None
            return attempt.fail(media_error_for_action(attempt.action, error), attempt.action.name)
    else:
        mask = partner
    attempt.mask = mask
    storage.delete(deps.layout.pair_key(pair_id(attempt.bucket, pairing)))  # no longer waiting
    return None


def find_partner(storage: Storage, deps: Deps, pairing: Pairing, key: str) -> ObjectInfo | None:
    """The mask of an image (by its name), or the image of a mask (the one file `<stem>.<ext>` beside
    it that is not a mask itself; the first in key order if there are several)."""
    if pairing.role == "image":
        try:
            return storage.head(pairing.mask_key)
        except ObjectNotFoundError:
            return None
    for info in storage.list(pairing.image_prefix):
        rest = info.key[len(pairing.image_prefix) :]
        if info.key != key and "/" not in rest and deps.layout.refusal(info.key) is None:
            routed = route(info.key, "image", deps.rules)
            if routed is None or routed.pair is None or routed.pair.role != "mask":
                return info
    return None


def _wait(attempt: UploadAttempt, pairing: Pairing, missing: str) -> None:
    deps = attempt.deps
    body = {
        "Bucket": attempt.bucket,
        "Region": attempt.event.region,
        "Present": {"Key": attempt.key, "ETag": attempt.info.etag, "Size": attempt.info.size},
        "Role": pairing.role,
        "Missing": missing,
        "Since": deps.clock(),
        "Timeout": pairing.timeout,
    }
    key = deps.layout.pair_key(pair_id(attempt.bucket, pairing))
    attempt.storage.put_bytes(
        key, json.dumps(body, ensure_ascii=False).encode("utf-8"), content_type="application/json"
    )


def expire_waiting(deps: Deps, storage: Storage, marker_key: str) -> Outcome | None:
    """A half still waiting past its pair's timeout: processed again if the other half has arrived since
    (its event was lost), else one failure record of the half that came, naming the missing one."""
    try:
        waiting: dict[str, Any] = json.loads(storage.get_bytes(marker_key))
        present, since, timeout = waiting["Present"], float(waiting["Since"]), float(waiting["Timeout"])
    except (SegflowError, ValueError, KeyError, TypeError):
        return None
    if deps.clock() < since + timeout:
        return None
    from segflow.events import OssRecord, object_created_event
    from segflow.services.upload import process_record

    region = str(waiting.get("Region") or deps.settings.region)
    event = object_created_event(
        storage.bucket, present["Key"], etag=present["ETag"], size=int(present["Size"]), region=region
    )
    outcome = process_record(OssRecord(event["events"][0], 0), deps)
    if outcome.outcome is not Outcome.WAITING:
        return outcome.outcome  # the pair is complete now (or the file is gone)
    role = "mask" if waiting.get("Role") == "image" else "image"
    error = InputValidationError(
        f"RefineMask needs the {role} of {present['Key']}; {waiting.get('Missing')} did not arrive within "
        f"{timeout:.0f} s",
        code=MISSING_CODE,
    )
    write_failure(deps, storage, key=present["Key"], etag=present["ETag"], action="RefineMask", error=error)
    storage.delete(marker_key)
    return Outcome.FAILED
