"""`segflow backfill --dry-run`: what a backfill would do with each object, touching nothing.

Each object is routed the way on_upload routes it: its media type from its magic bytes and headers
(`segflow.media.probe_media`, a few ranged reads: read-only, and exact — never the extension), then the
first matching rule of `SEGFLOW_RULES` (of this environment: with `--via fc` the deployed function's
rules decide, keep them the same) or the default action. The object's idempotency record, if any, says
whether a run would process it, find it done (a no-op), or find it failed (also a no-op: a failed object
goes through again only with `segflow redrive`). Nothing is written and no API is called.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from segflow.catalogue import get_action
from segflow.errors import SegflowError, UnknownActionError
from segflow.media import MediaError, probe_media
from segflow.records import RecordStore, params_changed
from segflow.routing import Rule, parse_rules, route
from segflow.states import RecordStates
from segflow.storage.base import ObjectInfo
from segflow.validation import media_mismatch, unreadable_failure
from segflow_cli.operate import Operation

UNROUTED = "(would fail)"
NOTE = "Media from each file's header bytes (ranged reads); routes from SEGFLOW_RULES of this environment."


class Planned(NamedTuple):
    """What a run would do with one object."""

    key: str
    size: int
    action: str
    state: str
    """new | done | failed | submitted | submitting (a record exists in that state), rerun (done or
    failed with other rule parameters: processed again), or the code of the failure the object would get
    before any call."""


def plan(operation: Operation, objects: Iterable[ObjectInfo], *, workers: int) -> list[Planned]:
    """Route every object (in parallel: each costs a few ranged reads and one record read)."""
    rules = parse_rules(list(operation.settings.rules))
    records = RecordStore(operation.storage, operation.layout)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(lambda info: _plan_one(operation, rules, records, info), objects))


def _plan_one(
    operation: Operation, rules: tuple[Rule, ...], records: RecordStore, info: ObjectInfo
) -> Planned:
    storage = operation.storage
    try:
        media = probe_media(storage.reader(info.key), info.size)
    except MediaError as error:  # the action and code on_upload records for it (one rule for both)
        action_name, coded = unreadable_failure(info.key, error, rules)
        return Planned(info.key, info.size, action_name or UNROUTED, coded.code)
    except SegflowError as error:
        return Planned(info.key, info.size, UNROUTED, f"unreadable: {error.code}")
    chosen = route(info.key, media.media, rules)
    if chosen is None:  # pragma: no cover - probe_media only knows images and videos
        return Planned(info.key, info.size, UNROUTED, "InvalidFile.Type")
    try:
        action = get_action(chosen.action)
    except UnknownActionError as error:
        return Planned(info.key, info.size, chosen.action, error.code)
    mismatch = media_mismatch(action, info.key, media)
    if mismatch is not None:
        return Planned(info.key, info.size, chosen.action, mismatch.code)
    record = records.find(operation.bucket, info.key, info.etag, action.name)
    if record is None:
        return Planned(info.key, info.size, action.name, "new")
    if params_changed(record, chosen.params) and record.state in (RecordStates.DONE, RecordStates.FAILED):
        return Planned(info.key, info.size, action.name, "rerun")
    return Planned(info.key, info.size, action.name, record.state)


def plan_document(planned: list[Planned], *, bucket: str) -> dict[str, Any]:
    """The plan as `--json` prints it: the shape of a run's summary (`RunSummary.to_dict`) plus `plan`,
    per action the objects, their bytes and how many are in each state."""
    by_action, sizes = _by_action(planned)
    states: Counter[str] = Counter()
    for counted in by_action.values():
        states.update(counted)
    return {
        "command": "backfill",
        "bucket": bucket,
        "via": "dry-run",
        "counts": dict(sorted(states.items())),
        "actions": {action: sum(counted.values()) for action, counted in sorted(by_action.items())},
        "plan": {
            action: {"objects": sum(counted.values()), "bytes": sizes[action], "states": dict(counted)}
            for action, counted in sorted(by_action.items())
        },
        "failures": [],
        "notes": [NOTE],
    }


def print_plan(planned: list[Planned], *, via: str | None) -> None:
    by_action, sizes = _by_action(planned)
    print(f"{len(planned):,} objects would be sent{f' (--via {via})' if via else ''}:")
    for action in sorted(by_action):
        states = by_action[action]
        total = sum(states.values())
        detail = ", ".join(f"{states[s]:,} {_words(s)}" for s in sorted(states))
        print(f"  {action:<24} {total:>8,} objects {_mb(sizes[action]):>10}   {detail}")
    failed = sum(c["failed"] for c in by_action.values())
    if failed:
        print(f"  {failed:,} already failed: a backfill leaves them as they are; use `segflow redrive`.")
    print(NOTE)


def _by_action(planned: list[Planned]) -> tuple[dict[str, Counter[str]], Counter[str]]:
    by_action: dict[str, Counter[str]] = defaultdict(Counter)
    sizes: Counter[str] = Counter()
    for item in planned:
        by_action[item.action][item.state] += 1
        sizes[item.action] += item.size
    return by_action, sizes


def _words(state: str) -> str:
    return {
        "new": "to process",
        "rerun": "done or failed with other rule parameters (to process again)",
        "done": "already done (no-op)",
        "failed": "already failed (no-op)",
        "submitted": "job running (no-op)",
        "submitting": "in progress",
    }.get(state, f"would fail {state}")


def _mb(size: int) -> str:
    return f"{size / 1_048_576:,.1f} MiB"
