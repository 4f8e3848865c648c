"""RefineMask pairs on upload: an image and its coarse mask, paired by name (`routing`, "Pairs").

Whichever of the two arrives second triggers the call with both URLs: the image's key names the result
and the idempotency record, whose ETag is both ETags (`<image>+<mask>`), so uploading the same mask again
is a duplicate, not a second call. The first to arrive waits in `<jobs>/pairs/<id>.json`; each upload's
event is delivered after that upload completed, so the later of the two always finds the other. A partner
that never arrives within the rule's `pair_timeout` becomes a failure record of the file that did, naming
the one that is missing (`services.leftovers.expire_waiting`).
"""

import hashlib
import json

from segflow.errors import ObjectNotFoundError
from segflow.media import MediaError, probe_media
from segflow.routing import Pairing, route
from segflow.services.deps import Deps
from segflow.services.stages import Identified, Located, RecordOutcome, Refusal
from segflow.states import Outcomes
from segflow.storage.base import ObjectInfo, Storage
from segflow.validation import media_error_for_action
from segflow.values import replace

MISSING_CODE = "PairMissing"


def pair_id(bucket: str, pairing: Pairing) -> str:
    material = json.dumps([bucket, pairing.folder, pairing.stem], ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:40]


def pair(item: Identified, deps: Deps) -> Identified | RecordOutcome | Refusal:
    """Find the other half: without it, wait (recorded); with it, the image's `Identified` with the mask
    beside it (unchanged when there is nothing to pair)."""
    pairing = item.route.pair
    if pairing is None:
        return item
    storage = item.storage
    partner = find_partner(storage, deps, pairing, item.key)
    if partner is None:
        missing = pairing.mask_key if pairing.role == "image" else f"{pairing.image_prefix}*"
        _wait(item, deps, pairing, missing)
        return item.outcome(Outcomes.WAITING, detail=f"waiting for {missing}")
    if pairing.role == "mask":
        mask, image = item.info, partner
        try:
            media = probe_media(storage.reader(image.key), image.size)
        except MediaError as error:
            located = Located(item.event, storage, image.key, image)
            return Refusal(located, media_error_for_action(item.action, error), item.action.name)
        item = replace(item, key=image.key, info=image, media=media)
    else:
        mask = partner
    storage.delete(deps.layout.pair_key(pair_id(storage.bucket, pairing)))  # no longer waiting
    return replace(item, mask=mask)


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


def _wait(item: Identified, deps: Deps, pairing: Pairing, missing: str) -> None:
    body = {
        "Bucket": item.storage.bucket,
        "Region": item.event.region,
        "Present": {"Key": item.key, "ETag": item.info.etag, "Size": item.info.size},
        "Role": pairing.role,
        "Missing": missing,
        "Since": deps.clock(),
        "Timeout": pairing.timeout,
    }
    key = deps.layout.pair_key(pair_id(item.storage.bucket, pairing))
    item.storage.put_bytes(
        key, json.dumps(body, ensure_ascii=False).encode("utf-8"), content_type="application/json"
    )
