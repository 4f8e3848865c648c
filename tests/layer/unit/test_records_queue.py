"""Idempotency records (`RecordStore`) and the job queue with its leases (`JobQueue`), on put-if-absent
storage (issue 3, "Idempotency" and "collect_jobs")."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from segflow.errors import StorageError
from segflow.jobqueue import JobQueue, queue_job
from segflow.layout import BucketLayout, as_prefix
from segflow.records import Claim, JobRecord, Payload, RecordStore, Taken, record_id_for
from segflow.states import ClaimOutcomes, RecordStates
from segflow.values import replace
from tests.support.memory_storage import MemoryStorage

ACQUIRED, DUPLICATE, IN_PROGRESS = ClaimOutcomes.ACQUIRED, ClaimOutcomes.DUPLICATE, ClaimOutcomes.IN_PROGRESS
SUBMITTING, SUBMITTED, DONE = RecordStates.SUBMITTING, RecordStates.SUBMITTED, RecordStates.DONE
LAYOUT = BucketLayout("segmented", "segflow-jobs", "segflow-failed", "incoming")


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def storage() -> MemoryStorage:
    return MemoryStorage()


@pytest.fixture
def queue(storage: MemoryStorage, clock: FakeClock) -> JobQueue:
    return JobQueue(storage, LAYOUT, clock=clock, lease_seconds=120)


@pytest.fixture
def store(storage: MemoryStorage, clock: FakeClock, queue: JobQueue) -> RecordStore:
    return RecordStore(storage, LAYOUT, clock=clock, claim_seconds=600, queued=queue.load)


def begin(store: RecordStore, etag: str = "ETAG1", action: str = "SegmentCommonImage") -> Taken:
    return store.begin("segflow-demo", "incoming/cat.jpg", etag, action, {"ReturnForm": "mask"}, size=10)


def test_record_id_is_stable_and_depends_on_bucket_key_etag_and_action() -> None:
    base = record_id_for("b", "incoming/a.png", "ABC", "SegmentBody")
    assert base == record_id_for("b", "incoming/a.png", '"abc"', "SegmentBody")  # quotes/case of ETag
    others = {
        record_id_for("c", "incoming/a.png", "ABC", "SegmentBody"),
        record_id_for("b", "incoming/b.png", "ABC", "SegmentBody"),
        record_id_for("b", "incoming/a.png", "ABD", "SegmentBody"),
        record_id_for("b", "incoming/a.png", "ABC", "SegmentHead"),
    }
    assert base not in others and len(others) == 4


def test_a_final_record_of_other_parameters_is_new_work_claimed_once(
    store: RecordStore, storage: MemoryStorage
) -> None:
    """A rule's parameters changed after the object was done: the next delivery claims the same record
    anew (paid-call count from zero), a concurrent one finds it in progress, and the same parameters are
    a duplicate again afterwards."""
    first = begin(store).record
    store.mark_done(store.note_call(first), outputs=("segmented/x/cutout.png",), request_id="R1")
    assert LAYOUT.done_key(first.record_id) in storage.objects

    def other() -> Taken:
        return store.begin(
            "segflow-demo", "incoming/cat.jpg", "ETAG1", "SegmentCommonImage", {"ReturnForm": "crop"}
        )

    with ThreadPoolExecutor(4) as pool:
        claims = list(pool.map(lambda _: other(), range(4)))
    (won,) = [c for c in claims if c.outcome == ACQUIRED]
    assert {c.outcome for c in claims if c is not won} == {IN_PROGRESS}
    assert won.record.record_id == first.record_id
    assert won.record.claim.generation == first.claim.generation + 1
    assert (won.record.state, won.record.claim.calls, won.record.payload) == (SUBMITTING, 0, Payload())
    assert dict(won.record.params) == {"ReturnForm": "crop"}
    assert LAYOUT.done_key(first.record_id) not in storage.objects  # not done with these parameters
    store.mark_done(won.record, outputs=("segmented/x/mask.png",), request_id="R2")
    assert other().outcome == DUPLICATE


def test_prefix_is_normalised_to_one_trailing_slash() -> None:
    assert as_prefix("segflow-jobs") == as_prefix("segflow-jobs/") == "segflow-jobs/"
    assert as_prefix("") == ""


def test_first_delivery_acquires_a_submitting_record_created_put_if_absent(
    store: RecordStore, storage: MemoryStorage
) -> None:
    claim = begin(store)
    assert claim.outcome == ACQUIRED
    assert claim.record.state == SUBMITTING and claim.record.claim.attempts == 1
    stored = store.load(claim.record.record_id)
    assert stored == claim.record
    rid = claim.record.record_id
    assert storage.keys() == [f"segflow-jobs/inflight/{rid}.json", f"segflow-jobs/records/{rid}.json"]


def test_duplicate_after_done_is_skipped(store: RecordStore) -> None:
    record = begin(store).record
    store.mark_done(record, outputs=("segmented/x/cutout.png",), request_id="R1")
    again = begin(store)
    assert again.outcome == DUPLICATE and again.record.state == DONE
    assert again.record.payload.outputs == ("segmented/x/cutout.png",)


def test_duplicate_while_owner_is_working_is_in_progress(store: RecordStore, clock: FakeClock) -> None:
    begin(store)
    clock.now += 599
    assert begin(store).outcome == IN_PROGRESS


def test_record_stuck_in_submitting_is_taken_over_after_the_claim_expires(
    store: RecordStore, clock: FakeClock, storage: MemoryStorage
) -> None:
    first = begin(store).record
    clock.now += 601
    second = begin(store)
    assert second.outcome == ACQUIRED
    assert (second.record.claim.generation, second.record.claim.attempts) == (1, 2)
    assert storage.keys("segflow-jobs/claims/") == [f"segflow-jobs/claims/{first.record_id}.00000001"]
    assert begin(store).outcome == IN_PROGRESS  # the new owner holds it again


def test_released_record_is_taken_over_by_the_next_delivery_at_once(store: RecordStore) -> None:
    record = begin(store).record
    store.release(record)
    claim = begin(store)
    assert claim.outcome == ACQUIRED and claim.record.claim.generation == 1


def test_only_one_of_many_concurrent_takeovers_wins(store: RecordStore, clock: FakeClock) -> None:
    begin(store)
    clock.now += 601
    barrier = threading.Barrier(8)

    def attempt(_: int) -> str:
        barrier.wait()
        return begin(store).outcome

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count(ACQUIRED) == 1
    assert set(outcomes) == {ACQUIRED, IN_PROGRESS}


def test_only_one_of_many_concurrent_first_deliveries_acquires(store: RecordStore) -> None:
    barrier = threading.Barrier(8)

    def attempt(_: int) -> str:
        barrier.wait()
        return begin(store).outcome

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(8)))
    assert outcomes.count(ACQUIRED) == 1


def test_new_etag_is_a_new_record(store: RecordStore) -> None:
    store.mark_done(begin(store).record, outputs=(), request_id=None)
    assert begin(store, etag="ETAG2").outcome == ACQUIRED


def test_submitted_job_is_pending_until_finished(store: RecordStore, queue: JobQueue) -> None:
    record = queue_job(store, queue, begin(store).record, job_id="JOB-1", request_id="JOB-1")
    assert record.state == SUBMITTED
    assert list(queue.ids()) == [record.record_id]
    pending = queue.load(record.record_id)
    assert pending is not None and pending.payload.job_id == "JOB-1"
    assert begin(store).outcome == DUPLICATE
    store.mark_done(record, outputs=(), request_id="JOB-1")
    queue.finish(record.record_id)
    assert list(queue.ids()) == []


def test_pending_entry_written_before_a_crash_makes_the_redelivery_a_duplicate(
    store: RecordStore, queue: JobQueue
) -> None:
    record = begin(store).record
    queue.put(replace(record, state=SUBMITTED).with_payload(job_id="JOB-1"))  # the crash: record not updated
    claim = begin(store)
    assert claim.outcome == DUPLICATE and claim.record.payload.job_id == "JOB-1"


def test_pending_listing_pages_through_many_jobs(store: RecordStore, queue: JobQueue) -> None:
    ids = []
    for i in range(25):
        claim = begin(store, etag=f"E{i}")
        ids.append(queue_job(store, queue, claim.record, job_id=f"J{i}", request_id=None).record_id)
    assert sorted(queue.ids(page_size=7)) == sorted(ids)


def test_lease_is_exclusive_until_it_expires_then_reclaimed_with_the_next_generation(
    clock: FakeClock, queue: JobQueue
) -> None:
    first = queue.try_lease("abc", "collector-1")
    assert first is not None and first.generation == 0
    assert queue.try_lease("abc", "collector-2") is None
    clock.now += 121  # collector-1 crashed: its lease ran out
    second = queue.try_lease("abc", "collector-2")
    assert second is not None and (second.generation, second.owner) == (1, "collector-2")


def test_released_lease_lets_the_next_tick_claim_at_once(queue: JobQueue) -> None:
    lease = queue.try_lease("abc", "collector-1")
    assert lease is not None
    queue.release_lease(lease)
    again = queue.try_lease("abc", "collector-2")
    assert again is not None and again.generation == 1


def test_only_one_of_many_concurrent_collectors_gets_the_lease(queue: JobQueue) -> None:
    barrier = threading.Barrier(8)

    def attempt(i: int) -> bool:
        barrier.wait()
        return queue.try_lease("abc", f"collector-{i}") is not None

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(attempt, range(8))) == 1


def test_a_job_polled_for_many_ticks_keeps_one_lease_file(storage: MemoryStorage, queue: JobQueue) -> None:
    for tick in range(50):
        lease = queue.try_lease("abc", f"tick-{tick}")
        assert lease is not None and lease.generation == tick
        queue.release_lease(lease)
    assert storage.keys("segflow-jobs/leases/") == ["segflow-jobs/leases/abc.00000049"]


def test_finishing_a_job_clears_its_leases(storage: MemoryStorage, clock: FakeClock, queue: JobQueue) -> None:
    queue.try_lease("abc", "c1")
    clock.now += 500
    queue.try_lease("abc", "c2")
    assert storage.keys("segflow-jobs/leases/") == ["segflow-jobs/leases/abc.00000001"]
    queue.finish("abc")
    assert storage.keys("segflow-jobs/leases/") == []


def test_record_survives_a_json_round_trip() -> None:
    record = JobRecord(
        record_id="r",
        bucket="b",
        key="incoming/猫 1.png",
        etag="E",
        action="SegmentBody",
        state=DONE,
        params={"Async": "true"},
        payload=Payload(fit={"width": 4000, "height": 3000}, outputs=("a", "b"), error={"code": "X"}),
    )
    assert JobRecord.from_json(record.to_json()) == record


def test_unreadable_record_is_a_storage_error() -> None:
    with pytest.raises(StorageError):
        JobRecord.from_json(b"{not json")
    with pytest.raises(StorageError):
        JobRecord.from_json(b'{"record_id": "r", "state": "weird"}')


def test_inflight_mark_lives_exactly_while_the_record_is_submitting(
    store: RecordStore, queue: JobQueue
) -> None:
    first = begin(store).record
    second = begin(store, etag="E2").record
    third = begin(store, etag="E3").record
    assert sorted(store.list_inflight()) == sorted(r.record_id for r in (first, second, third))
    store.mark_done(first, outputs=(), request_id=None)
    store.mark_failed(second, {"code": "X"})
    queue_job(store, queue, third, job_id="J", request_id="J")
    assert list(store.list_inflight()) == []


def test_stalled_record_is_one_unclaimed_and_quiet_for_long_enough(
    store: RecordStore, clock: FakeClock
) -> None:
    record = begin(store).record
    assert store.stalled(record.record_id, quiet_seconds=60) is None  # its owner holds the claim
    clock.now += 601  # the owner died: the claim ran out
    stalled = store.stalled(record.record_id, quiet_seconds=60)
    assert stalled is not None and stalled.record_id == record.record_id
    store.release(stalled)  # a retryable failure: FC's own retry gets `quiet_seconds` to come first
    assert store.stalled(record.record_id, quiet_seconds=60) is None
    clock.now += 61
    assert store.stalled(record.record_id, quiet_seconds=60) is not None


def test_stalled_check_clears_the_mark_of_a_finished_record(
    store: RecordStore, storage: MemoryStorage
) -> None:
    record = begin(store).record
    store.save(replace(record, state=DONE))  # finished, but the mark was not removed (crash)
    assert store.stalled(record.record_id, quiet_seconds=0) is None
    assert storage.keys("segflow-jobs/inflight/") == []


OLD_RECORD = Path(__file__).parents[2] / "support" / "data" / "job-record-b841c74.json"
"""A record exactly as segflow wrote it before the claim and the payload were split (commit b841c74:
every field at the top level). A deployed bucket holds such records."""


def test_a_record_written_before_the_split_reads_into_claim_and_payload_and_writes_back_the_same() -> None:
    raw = OLD_RECORD.read_bytes()
    record = JobRecord.from_json(raw)
    assert (record.key, record.state, record.params) == (
        "incoming/photos/猫 1.jpg",
        SUBMITTING,
        {"ReturnForm": "mask"},
    )
    assert record.claim == Claim(generation=2, claimed_until=1767225900.5, attempts=3, calls=1)
    assert record.payload.submit_key == "segflow-jobs/work/3f1c0d6a.jpg"
    assert record.payload.fit == {"width": 1280, "height": 960, "scale": 0.5}
    assert record.payload.answer is not None and record.payload.answer_expires_at == 1767227090.0
    assert record.payload.error == {"code": "ServiceUnavailable", "message": "injected"}
    # Written back byte for byte: an instance still running the older code reads what this one writes.
    assert record.to_json() == raw
