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
from typing import NamedTuple

from segflow.catalogue import get_action
from segflow.errors import SegflowError, UnknownActionError
from segflow.media import MediaError, probe_media
from segflow.records import RecordStore, record_id_for
from segflow.routing import Rule, parse_rules, route
from segflow.storage.base import ObjectInfo
from segflow_cli.operate import Operation

UNROUTED = "(would fail)"


class Planned(NamedTuple):
    """What a run would do with one object."""

    key: str
    size: int
    action: str
    state: str
    """new | done | failed | submitted | submitting (a record exists in that state), or the code of the
    failure the object would get before any call."""


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
    except MediaError as error:
        return Planned(info.key, info.size, UNROUTED, error.code)
    except SegflowError as error:
        return Planned(info.key, info.size, UNROUTED, f"unreadable: {error.code}")
    chosen = route(info.key, media.media, rules)
    if chosen is None:  # pragma: no cover - probe_media only knows images and videos
        return Planned(info.key, info.size, UNROUTED, "InvalidFile.Type")
    try:
        action = get_action(chosen.action)
    except UnknownActionError as error:
        return Planned(info.key, info.size, chosen.action, error.code)
    if action.media != media.media:
        return Planned(info.key, info.size, chosen.action, action.codes.format)
    record = records.load(record_id_for(operation.bucket, info.key, info.etag, action.name))
    state = "new" if record is None else record.state
    return Planned(info.key, info.size, action.name, state)


def print_plan(planned: list[Planned], *, via: str | None) -> None:
    by_action: dict[str, Counter[str]] = defaultdict(Counter)
    sizes: Counter[str] = Counter()
    for item in planned:
        by_action[item.action][item.state] += 1
        sizes[item.action] += item.size
    print(f"{len(planned):,} objects would be sent{f' (--via {via})' if via else ''}:")
    for action in sorted(by_action):
        states = by_action[action]
        total = sum(states.values())
        detail = ", ".join(f"{states[s]:,} {_words(s)}" for s in sorted(states))
        print(f"  {action:<24} {total:>8,} objects {_mb(sizes[action]):>10}   {detail}")
    failed = sum(c["failed"] for c in by_action.values())
    if failed:
        print(f"  {failed:,} already failed: a backfill leaves them as they are; use `segflow redrive`.")
    print(
        "Media from each file's header bytes (ranged reads); routes from SEGFLOW_RULES of this environment."
    )


def _words(state: str) -> str:
    return {
        "new": "to process",
        "done": "already done (no-op)",
        "failed": "already failed (no-op)",
        "submitted": "job running (no-op)",
        "submitting": "in progress",
    }.get(state, f"would fail {state}")


def _mb(size: int) -> str:
    return f"{size / 1_048_576:,.1f} MiB"
