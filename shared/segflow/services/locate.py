"""The first steps of an upload, before anything is claimed or paid: which object, and what it is.

locate      the key the event names (decoded, or raw), checked against the input and own prefixes,
            and its HEAD                                                      → `Located`
identify    its media type from the magic bytes, the routing rule, the action  → `Identified`
"""

from segflow.catalogue import get_action
from segflow.errors import (
    EventError,
    InputValidationError,
    ObjectNotFoundError,
    SegflowError,
    UnknownActionError,
)
from segflow.events import OssRecord
from segflow.failure_policy import Decision, Decisions, decide
from segflow.failure_records import FailureRecords
from segflow.logs import printable
from segflow.media import MediaError, probe_media
from segflow.outputs import failure_document
from segflow.routing import route
from segflow.services.deps import Deps
from segflow.services.stages import Identified, Located, RecordOutcome, Refusal
from segflow.states import Outcome, Outcomes
from segflow.storage.base import key_problem
from segflow.validation import media_mismatch, unreadable_failure


def locate(event: OssRecord, deps: Deps) -> Located | RecordOutcome:
    """The object the record names, or why there is nothing to do. A key outside the input prefix or under
    segflow's own prefixes is never read, in whichever form (decoded or raw) the event carried it."""
    try:
        event.validate()
        bucket, region = event.bucket, event.region
        if not event.is_object_created:
            return RecordOutcome(
                Outcomes.SKIPPED, bucket, event.key, code="NotObjectCreated", detail=event.event_name
            )
    except EventError as error:
        where = event.readable_location()
        return RecordOutcome(Outcomes.SKIPPED, *where, code=error.code, detail=error.message)
    allowed: list[str] = []
    refused: list[RecordOutcome] = []
    invalid: list[tuple[str, str]] = []
    for key in event.candidate_keys():
        refusal = deps.layout.refusal(key)
        problem = key_problem(key)
        if refusal is not None:
            shown = printable(key)
            refused.append(RecordOutcome(Outcomes.SKIPPED, bucket, shown, code=refusal[0], detail=refusal[1]))
        elif problem is not None:
            invalid.append((key, problem))
        else:
            allowed.append(key)
    if not allowed:
        return refused[0] if refused else invalid_key(deps, event, *invalid[0])
    try:
        storage = deps.storage_for(bucket, region)
        for key in allowed:
            try:
                return Located(event, storage, key, storage.head(key))
            except ObjectNotFoundError:
                continue
    except SegflowError as error:
        # The bucket cannot be reached as it should (denied, unknown, down): nothing is read or paid.
        decision = decide(error)
        outcomes: dict[Decision, Outcome] = {Decisions.RETRY: Outcomes.RETRY, Decisions.FAULT: Outcomes.FAULT}
        outcome = outcomes.get(decision, Outcomes.SKIPPED)
        return RecordOutcome(outcome, bucket, allowed[0], code=error.code, detail=error.message, error=error)
    if refused:
        return refused[0]  # the key that exists is the refused form (one of our own objects): never read
    return RecordOutcome(Outcomes.SKIPPED, bucket, allowed[0], code="NoSuchKey", detail="object is gone")


def invalid_key(deps: Deps, event: OssRecord, key: str, problem: str) -> RecordOutcome:
    """A key under the input prefix that no object can have (the event is malformed, and stays so on every
    delivery): a failure record a person can find, in the `_long/<sha256>` form, and nothing read."""
    error = EventError(f"the event names a key that is not an object key: {problem}", code="InvalidObjectKey")
    shown = printable(key)
    document = failure_document(
        bucket=event.bucket, key=shown, etag=None, action=None, error=error, at=deps.clock()
    )
    try:
        storage = deps.storage_for(event.bucket, event.region)
        FailureRecords(storage, deps.layout).write(document, deps.layout.long_failure_key(key))
    except SegflowError as storing:
        retry = decide(storing) == Decisions.RETRY
        return RecordOutcome(
            Outcomes.RETRY if retry else Outcomes.SKIPPED,
            event.bucket,
            shown,
            code=storing.code,
            detail=f"{error.message}; its failure record could not be written",
            error=storing if retry else None,
        )
    return RecordOutcome(Outcomes.FAILED, event.bucket, shown, code=error.code, detail=error.message)


def identify(located: Located, deps: Deps) -> Identified | Refusal:
    """The media type (magic bytes, ranged reads), the route and the action; a file the action cannot
    take, or an unknown action, is refused (its failure record is published by the caller)."""
    try:
        media = probe_media(located.storage.reader(located.key), located.info.size)
    except MediaError as error:
        action_name, coded = unreadable_failure(located.key, error, deps.rules)
        return Refusal(located, coded, action_name)
    chosen = route(located.key, media.media, deps.rules)
    if chosen is None:  # pragma: no cover - probe_media only knows images and videos
        return Refusal(
            located, InputValidationError(f"no route for {media.media}", code="InvalidFile.Type"), None
        )
    try:
        action = get_action(chosen.action)
        mismatch = media_mismatch(action, located.key, media)
        if mismatch is not None:
            raise mismatch
    except (UnknownActionError, InputValidationError) as error:
        return Refusal(located, error, chosen.action)
    return Identified(located.event, located.storage, located.key, located.info, media, chosen, action)
