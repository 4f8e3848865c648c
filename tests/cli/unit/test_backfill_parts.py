"""The parts `segflow backfill` and `segflow redrive` are built from, without any network: the listing and
its filters, the checkpoint's resume rules, the events the senders build, the in-order batch loop, and how
an outcome line becomes an object's result."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from segflow.errors import ConfigError, ObjectNotFoundError, StorageError
from segflow.events import OssEvent
from segflow.layout import BucketLayout
from segflow.retry import RetryPolicy
from segflow.storage.base import ObjectInfo
from segflow_cli.batches import Prefetch, batched, run_batches
from segflow_cli.checkpoint import BucketCheckpoint, Checkpoint, CheckpointError, FileCheckpoint, resume
from segflow_cli.objects import BucketAccessError, ObjectFilter, list_objects, parse_when, resolve_prefix
from segflow_cli.redrive_run import failure_identity
from segflow_cli.senders import (
    MAX_EVENT_BYTES,
    EventShape,
    ObjectResult,
    RecordPacer,
    SendRefused,
    event_payloads,
    outcomes_of,
)
from tests.support.memory_storage import MemoryStorage

LAYOUT = BucketLayout("segmented/", "segflow-jobs/", "segflow-failed/", "incoming/")
NO_WAIT = RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0, max_total=10.0, sleep=lambda _: None)


def info(key: str, *, size: int = 10, etag: str = "A" * 32, modified: float | None = 1000.0) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, etag=etag, last_modified=modified)


# -- which objects ------------------------------------------------------------------------------------


def test_times_are_iso_dates_or_ages() -> None:
    assert parse_when("2024-05-01") == 1714521600.0
    assert parse_when("2024-05-01T08:00:00Z") == 1714550400.0
    assert parse_when("2024-05-01T16:00:00+08:00") == 1714550400.0
    assert parse_when("12h", now=lambda: 100_000.0) == 100_000.0 - 12 * 3600
    assert parse_when("7d", now=lambda: 1_000_000.0) == 1_000_000.0 - 7 * 86400
    with pytest.raises(ConfigError):
        parse_when("yesterday")


def test_a_prefix_not_under_the_input_prefix_is_taken_relative_to_it() -> None:
    assert resolve_prefix(None, "incoming/") == "incoming/"
    assert resolve_prefix("incoming/2023/", "incoming/") == "incoming/2023/"
    assert resolve_prefix("2023/", "incoming/") == "incoming/2023/"


def test_filter_by_suffix_ignores_case_and_by_time_is_half_open() -> None:
    wanted = ObjectFilter("incoming/", (".jpg", ".mp4"), since=100.0, until=200.0)
    assert wanted.matches(info("incoming/a.JPG", modified=100.0))
    assert wanted.matches(info("incoming/a.mp4", modified=199.9))
    assert not wanted.matches(info("incoming/a.mp4", modified=200.0))
    assert not wanted.matches(info("incoming/a.png", modified=150.0))
    assert not wanted.matches(info("incoming/a.jpg", modified=None))  # a time filter cannot vouch for it


def test_listing_skips_keys_the_handler_would_refuse_and_starts_after_the_checkpoint() -> None:
    storage = MemoryStorage()
    for key in ("incoming/a.jpg", "incoming/b.jpg", "incoming/c.jpg", "segmented/x.png"):
        storage.put_bytes(key, b"x")
    # An input prefix that is an own prefix's sibling: the layout still refuses what is not an input.
    keys = [o.key for o in list_objects(storage, LAYOUT, ObjectFilter(""), start_after="incoming/a.jpg")]
    assert keys == ["incoming/b.jpg", "incoming/c.jpg"]


class FlakyListing(MemoryStorage):
    """Lists one key, then fails once with a transient error (as OSS may mid-listing)."""

    def __init__(self, error: StorageError) -> None:
        super().__init__()
        self.error = error
        self.failures = 0
        self.starts: list[str] = []

    def list(self, prefix: str, *, start_after: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        self.starts.append(start_after)
        listing = super().list(prefix, start_after=start_after, page_size=page_size)
        yield next(listing)
        if self.failures == 0:
            self.failures += 1
            raise self.error
        yield from listing


def test_a_transient_listing_error_reopens_after_the_last_key() -> None:
    storage = FlakyListing(StorageError("OSS error", code="InternalError", http_status=500))
    for name in "abcd":
        storage.put_bytes(f"incoming/{name}.jpg", b"x")
    keys = [o.key for o in list_objects(storage, LAYOUT, ObjectFilter("incoming/"), retry=NO_WAIT)]
    assert keys == ["incoming/a.jpg", "incoming/b.jpg", "incoming/c.jpg", "incoming/d.jpg"]
    assert storage.starts == ["", "incoming/a.jpg"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ObjectNotFoundError("no bucket", http_status=404), "NoSuchBucket"),
        (StorageError("denied", code="AccessDenied", http_status=403), "AccessDenied"),
    ],
)
def test_a_missing_bucket_or_a_denied_listing_is_a_configuration_error(
    error: StorageError, code: str
) -> None:
    storage = FlakyListing(error)
    storage.put_bytes("incoming/a.jpg", b"x")
    storage.put_bytes("incoming/b.jpg", b"x")
    with pytest.raises(BucketAccessError) as caught:
        list(list_objects(storage, LAYOUT, ObjectFilter("incoming/"), retry=NO_WAIT))
    assert caught.value.code == code
    assert storage.starts == [""]  # not retried: asking again gets the same answer


# -- checkpoints --------------------------------------------------------------------------------------

FILTERS = ObjectFilter("incoming/").describe()
OTHER = ObjectFilter("incoming/2023/").describe()


@pytest.fixture(params=["bucket", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BucketCheckpoint | FileCheckpoint:
    if request.param == "bucket":
        return BucketCheckpoint(MemoryStorage(), LAYOUT.backfill_checkpoint_key)
    return FileCheckpoint(tmp_path / "state" / "backfill.json")


def saved(store: BucketCheckpoint | FileCheckpoint, **changes: object) -> Checkpoint:
    checkpoint = Checkpoint("segflow-demo", dict(FILTERS), start_after="incoming/k.jpg", counts={"done": 3})
    for name, value in changes.items():
        setattr(checkpoint, name, value)
    store.save(checkpoint)
    return checkpoint


def test_a_checkpoint_round_trips_and_is_resumed(store: BucketCheckpoint | FileCheckpoint) -> None:
    saved(store)
    resumed, found = resume(store, "segflow-demo", dict(FILTERS), restart=False, now=1.0, via="local")
    assert found is resumed
    assert (resumed.start_after, resumed.counts, resumed.finished) == ("incoming/k.jpg", {"done": 3}, False)


def test_a_checkpoint_of_another_bucket_is_refused_even_with_restart(
    store: BucketCheckpoint | FileCheckpoint,
) -> None:
    saved(store, bucket="other-bucket")
    for restart in (False, True):
        with pytest.raises(CheckpointError, match="about bucket other-bucket"):
            resume(store, "segflow-demo", dict(FILTERS), restart=restart, now=1.0, via="local")


def test_an_unfinished_checkpoint_of_other_filters_is_refused_a_finished_one_replaced(
    store: BucketCheckpoint | FileCheckpoint,
) -> None:
    saved(store, filters=dict(OTHER))
    with pytest.raises(CheckpointError, match="unfinished backfill of other objects"):
        resume(store, "segflow-demo", dict(FILTERS), restart=False, now=1.0, via="local")
    fresh, _ = resume(store, "segflow-demo", dict(FILTERS), restart=True, now=1.0, via="local")
    assert fresh.start_after == ""
    saved(store, filters=dict(OTHER), finished=True)
    fresh, found = resume(store, "segflow-demo", dict(FILTERS), restart=False, now=1.0, via="local")
    assert fresh.start_after == "" and found is not None and found is not fresh


def test_an_unreadable_checkpoint_says_how_to_start_over(tmp_path: Path) -> None:
    path = tmp_path / "cp.json"
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="--restart"):
        FileCheckpoint(path).load()


# -- events ---------------------------------------------------------------------------------------------

SHAPE = EventShape("segflow-demo", "cn-shanghai", account="1234567890123456")


def test_events_carry_the_objects_real_key_size_etag_and_time() -> None:
    targets = [info("incoming/猫 咪+1.png", size=2048, etag="0123ABCD" * 4, modified=1714550400.5)]
    ((group, payload),) = event_payloads(SHAPE, targets)
    (record,) = OssEvent.from_payload(payload)
    assert group == targets
    assert (record.key, record.size, record.etag, record.bucket, record.region) == (
        "incoming/猫 咪+1.png",
        2048,
        "0123ABCD" * 4,
        "segflow-demo",
        "cn-shanghai",
    )
    assert record.is_object_created and record.event_name == "ObjectCreated:Backfill"
    assert json.loads(payload)["events"][0]["eventTime"] == "2024-05-01T08:00:00.500Z"


def test_events_of_the_longest_keys_stay_under_half_of_fcs_async_limit() -> None:
    long_key = "incoming/" + "é" * 500 + ".png"  # 1,013 bytes: near OSS's 1,023-byte limit
    targets = [info(f"{long_key[:-5]}{i:04d}.png") for i in range(200)]
    payloads = list(event_payloads(SHAPE, targets))
    assert [t for group, _ in payloads for t in group] == targets  # every object once, in order
    assert all(len(payload) <= MAX_EVENT_BYTES for _, payload in payloads)
    assert all(len(OssEvent.from_payload(p)) == len(g) for g, p in payloads)


# -- pacing -------------------------------------------------------------------------------------------


def paced(qps: float, sizes: list[int]) -> tuple[list[tuple[float, int]], float]:
    """When each event would be sent (all reserved at time 0), and the pacer's window."""
    pacer = RecordPacer(qps, clock=lambda: 0.0)
    return [(pacer.reserve(n), n) for n in sizes], pacer.window


@pytest.mark.parametrize(("qps", "batch"), [(20.0, 4), (2.0, 1), (10.5, 3), (50.0, 10)])
def test_records_in_any_second_stay_within_the_qps_counted_when_their_event_is_sent(
    qps: float, batch: int
) -> None:
    sends, window = paced(qps, [batch] * 60)
    assert window > 1.0  # a second, and a margin for the network's jitter
    for start, _ in sends:
        in_window = sum(n for at, n in sends if start <= at < start + window)
        assert in_window <= int(qps)
    events_per_window = int(qps) // batch
    assert sends[-1][0] <= 60 / events_per_window * window + 1.1  # steady, no slower than the cap allows


def test_an_event_larger_than_the_qps_is_spaced_by_its_size() -> None:
    sends, _ = paced(2.0, [10, 10, 10])
    assert [at for at, _ in sends] == [0.0, 5.0, 10.0]


# -- the batch loop ---------------------------------------------------------------------------------------


def test_batches_settle_in_listing_order_whatever_order_they_finish_in() -> None:
    settled: list[list[int]] = []

    def handle(batch: list[int]) -> list[ObjectResult]:
        time.sleep(0.02 * (5 - batch[0] % 5))  # early batches finish last
        return [ObjectResult(str(n), "sent") for n in batch]

    end = run_batches(batched(range(20), 2), handle, lambda b, r, in_order: settled.append(b), workers=4)
    assert end.completed
    assert [n for batch in settled for n in batch] == list(range(20))


def test_a_refused_batch_stops_the_run_and_nothing_after_it_counts_as_in_order() -> None:
    started: list[int] = []
    settled: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def handle(batch: list[int]) -> list[ObjectResult]:
        with lock:
            started.append(batch[0])
        if batch[0] == 4:
            raise SendRefused("FunctionNotFound", code="FunctionNotFound")
        return [ObjectResult(str(n), "sent") for n in batch]

    end = run_batches(
        batched(range(100), 2), handle, lambda b, r, in_order: settled.append((b[0], in_order)), workers=2
    )
    assert not end.completed and end.refused is not None and end.refused.code == "FunctionNotFound"
    assert [b for b, in_order in settled if in_order] == [0, 2]
    assert all(b > 4 for b, in_order in settled if not in_order)
    assert max(started) < 4 + 2 * 2 * 2  # at most 2 × workers batches were in flight past it


def test_prefetch_hands_the_sources_error_to_the_consumer() -> None:
    def source() -> Iterator[int]:
        yield 1
        raise BucketAccessError("denied", code="AccessDenied")

    items = Prefetch(source())
    with pytest.raises(BucketAccessError):
        list(items)
    items.close()


# -- outcomes ----------------------------------------------------------------------------------------------


def test_outcome_lines_become_results_and_a_missing_line_is_unfinished() -> None:
    group = [info("incoming/a.jpg"), info("incoming/b.jpg"), info("incoming/c.mp4"), info("incoming/d.jpg")]
    lines = [
        {"key": "incoming/a.jpg", "outcome": "duplicate", "detail": "done", "action": "SegmentBody"},
        {"key": "incoming/b.jpg", "outcome": "failed", "code": "InvalidImage.Content"},
        {"key": "incoming/c.mp4", "outcome": "submitted", "action": "SegmentVideoBody"},
    ]
    raised = StorageError("OSS 503", code="ServiceUnavailable", http_status=503)
    results = outcomes_of(group, lines, raised)
    assert [(r.outcome, r.code) for r in results] == [
        ("done", None),
        ("failed", "InvalidImage.Content"),
        ("submitted", None),
        ("unfinished", "ServiceUnavailable"),
    ]
    assert results[2].action == "SegmentVideoBody" and results[2].etag == "A" * 32


def test_a_failure_is_named_by_its_time_and_content() -> None:
    first = {"Key": "incoming/a.jpg", "Code": "Forbidden.RAM", "Time": "2026-01-01T00:00:00Z"}
    again = {**first, "Code": "InvalidImage.Content"}
    assert failure_identity(first) == failure_identity(dict(first))
    assert failure_identity(first) != failure_identity(again)
    assert failure_identity(first).startswith("2026-01-01T00:00:00Z-")
