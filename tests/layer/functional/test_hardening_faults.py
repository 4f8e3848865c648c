"""Faults on every side of the two functions (issue 6, Hardening → Faults).

GIVEN images and videos uploaded to a local bucket and a fake imageseg/videoseg on loopback, WHEN the API
fails half its calls (429 / 5xx), resets connections, hands out result URLs that are already expired,
the bucket fails a write (mid-stream too) or the process dies at any storage write — with FC redelivering
a failed event at most three more times and the timer collector ticking — THEN every input still ends with
exactly one result or exactly one failure record, never both, never none, and nothing paid for twice.

Retry delays are the harness's (1–5 ms), so the whole module runs in seconds.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow.errors import SegflowError, StorageError
from segflow.failure_records import FailureRecords
from segflow.services.deps import use_handler_deps
from segflow.storage.base import DEFAULT_CHUNK_SIZE, Storage
from tests.support import media_files as mf
from tests.support.fake_api import FakeApi, RecordedRequest, Reply
from tests.support.services_harness import Harness, ResultServer, harness, jpeg, mp4, oss_event
from tests.support.write_faults import WriteFaults

FC_DELIVERIES = 4  # FC's default for async invocations: the first one plus three retries
MAX_TICKS = 8


class Killed(BaseException):
    """What `kill -9` (or FC's timeout) looks like from inside: nothing `except Exception` catches."""


@pytest.fixture(autouse=True)
def _forget_deps() -> Iterator[None]:
    yield
    use_handler_deps(None)


# ------------------------------------------------------------------------------------ helpers


def upload(h: Harness, images: int, videos: int, *, video_bytes: bytes | None = None) -> list[str]:
    keys = [f"incoming/faults/photo-{i:02d}.jpg" for i in range(images)]
    keys += [f"incoming/faults/clip-{i:02d}.mp4" for i in range(videos)]
    for key in keys:
        h.put(key, (video_bytes or mp4()) if key.endswith(".mp4") else jpeg((320, 240)))
    return keys


def pending(h: Harness) -> int:
    return len(h.keys(h.deps.layout.jobs_prefix + "pending/"))


def run_to_completion(h: Harness, keys: list[str]) -> dict[str, int]:
    """FC's side of things: one event per upload, redelivered (at most FC_DELIVERIES times in all) while
    the handler raises; the timer collector ticks between rounds; the clock moves past claims and
    leases so work a dead invocation held is taken over."""
    deliveries = dict.fromkeys(keys, 0)
    undelivered = list(keys)
    for _ in range(MAX_TICKS):
        retry = []
        for key in undelivered:
            deliveries[key] += 1
            try:
                h.on_upload(oss_event(key))
            except (SegflowError, Killed):
                if deliveries[key] < FC_DELIVERIES:
                    retry.append(key)
        undelivered = retry
        with contextlib.suppress(Killed, SegflowError):  # a failed tick: FC runs the next one anyway
            h.collect()
        h.clock.advance(max(h.deps.claim_seconds, h.settings.lease_seconds) + 1)
        if not undelivered and pending(h) == 0 and all(outcome(h, k) != ("none",) for k in keys):
            break
    return deliveries


def outcome(h: Harness, key: str) -> tuple[str, ...]:
    manifests = h.results_for(key)
    failure = h.failure(key)
    if manifests and failure is not None:
        return ("both", *manifests, str(failure.get("Code")))
    if len(manifests) > 1:
        return ("several", *manifests)
    if manifests:
        return ("result",)
    if failure is not None:
        return ("failure", str(failure.get("Code")))
    return ("none",)


def assert_one_outcome_each(h: Harness, keys: list[str]) -> dict[str, tuple[str, ...]]:
    outcomes = {key: outcome(h, key) for key in keys}
    bad = {k: v for k, v in outcomes.items() if v[0] not in ("result", "failure")}
    assert not bad, bad
    assert pending(h) == 0
    tmp_dir = h.root / ".segflow-tmp"
    assert not tmp_dir.exists() or not any(tmp_dir.iterdir()), "a failed write left a temporary file"
    return outcomes


def fetches_per_key(h: Harness, keys: list[str]) -> dict[str, int]:
    """How often the service fetched each input, i.e. how many paid calls reached it."""
    return {key: sum(1 for url in h.vision.fetched if key.rsplit("/", 1)[1] in url) for key in keys}


def inject(api: FakeApi, h: Harness, fault: Callable[[RecordedRequest], Reply | None]) -> None:
    """Answer with `fault(request)` when it gives a reply, else as the fake service would."""
    service = h.vision._handle  # the FakeVision behaviour the harness installed

    def handler(request: RecordedRequest) -> Reply | None:
        return fault(request) or service(request)

    api.set_handler(handler)


# ------------------------------------------------------------------------------------ API faults


def _half_failing(kind: str, seed: int) -> Callable[[RecordedRequest], Reply | None]:
    rng = random.Random(seed)
    lock = threading.Lock()
    answers = {
        "429-and-5xx": [
            lambda: Reply.error(429, "Throttling.User", "Request was denied due to user flow control."),
            lambda: Reply.error(500, "InternalError"),
            lambda: Reply.error(503, "ServiceUnavailable"),
            lambda: Reply.error(500, "InternalServerError.Busy"),
        ],
        "connection-reset": [Reply.connection_reset],
    }[kind]

    def fault(_request: RecordedRequest) -> Reply | None:
        with lock:
            if rng.random() < 0.5:
                return rng.choice(answers)()
        return None

    return fault


@pytest.mark.parametrize("kind", ["429-and-5xx", "connection-reset"])
def test_half_of_all_api_calls_failing_still_gives_every_input_one_outcome(
    tmp_path: Path, api: FakeApi, results: ResultServer, kind: str
) -> None:
    h = harness(tmp_path / "buckets", api, results)
    h.vision.job_statuses = ["PROCESSING"]
    keys = upload(h, images=8, videos=4)
    inject(api, h, _half_failing(kind, seed=6))

    deliveries = run_to_completion(h, keys)

    outcomes = assert_one_outcome_each(h, keys)
    assert sum(v == ("result",) for v in outcomes.values()) >= len(keys) - 1  # 1/16 per delivery fails
    # Nothing paid for twice: each input reached the service at most once.
    assert max(fetches_per_key(h, keys).values()) == 1
    # No retry storm: at most 4 attempts per call per delivery, plus the collector's polls.
    assert api.count() <= 4 * (sum(deliveries.values()) + 4 * MAX_TICKS)


def test_result_urls_expired_before_download_end_in_one_outcome_each(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """Synchronous cutouts whose URL is dead on arrival, and async results expiring before the copy."""
    h = harness(tmp_path / "buckets", api, results)
    h.vision.job_statuses = []
    h.vision.expire_results = 3  # the first three PROCESS_SUCCESS answers hand out expired URLs
    keys = upload(h, images=4, videos=4)
    expired_sync = {"left": 2}
    lock = threading.Lock()
    service = h.vision._handle

    def expire_some(request: RecordedRequest) -> Reply | None:
        reply = service(request)
        if request.action != "SegmentCommonImage" or reply is None:
            return reply
        with lock:
            if expired_sync["left"] > 0:
                expired_sync["left"] -= 1
                results.expire(json.loads(reply.body)["Data"]["ImageURL"])
        return reply

    api.set_handler(expire_some)

    run_to_completion(h, keys)

    outcomes = assert_one_outcome_each(h, keys)
    codes = sorted(v[1] for v in outcomes.values() if v[0] == "failure")
    assert set(codes) <= {"ResultExpired"}, outcomes


# ------------------------------------------------------------------------------------ storage faults


class FaultyStorage(WriteFaults):
    """The `fail_at`-th write (put_bytes, put_stream, delete; counted from 1) raises `error()`."""

    def __init__(
        self,
        inner: Storage,
        fail_at: int | None,
        error: Callable[[], BaseException],
        *,
        fail_on: str | None = None,
    ) -> None:
        super().__init__(inner)
        self.fail_on = fail_on
        """Instead of counting: fail the first write whose description starts with this."""
        self.sticky = False
        """Fail every write from the `fail_at`-th on (the process is dead), not only that one."""
        self.fail_at = fail_at
        self.error = error
        self.writes = 0
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def should_fail(self, what: str, data: bytes | None) -> bool:
        with self._lock:
            self.writes += 1
            matched = self.fail_on is not None and not self.failed and what.startswith(self.fail_on)
            dead = self.sticky and self.fail_at is not None and self.writes >= self.fail_at
            if self.writes == self.fail_at or matched or dead:
                self.failed.append(what)
                return True
            return False

    def injected_error(self) -> BaseException:
        return self.error()


def _storage_error() -> BaseException:
    return StorageError("injected: connection to OSS lost", code="RequestError", http_status=503)


def _killed() -> BaseException:
    return Killed("injected: the instance died")


def with_faulty_storage(
    h: Harness, fail_at: int | None, error: Callable[[], BaseException], *, fail_on: str | None = None
) -> FaultyStorage:
    faulty = FaultyStorage(h.storage, fail_at, error, fail_on=fail_on)

    def storage_for(bucket: str, region: str | None = None) -> Storage:
        assert bucket == faulty.bucket
        return faulty

    h.deps.storage_for = storage_for
    return faulty


# A result of several download chunks, so a failing put_stream fails between parts.
BIG_VIDEO = mp4() + mf.box(b"free", bytes(2 * DEFAULT_CHUNK_SIZE + 12345))


def _scenario(
    tmp_path: Path,
    api: FakeApi,
    results: ResultServer,
    fail_at: int | None,
    error: Callable[[], BaseException],
) -> tuple[Harness, FaultyStorage, list[str]]:
    h = harness(tmp_path / f"buckets-{fail_at}", api, results)
    h.vision.job_statuses = []
    api.clear()
    keys = upload(h, images=1, videos=1, video_bytes=BIG_VIDEO)
    faulty = with_faulty_storage(h, fail_at, error)
    run_to_completion(h, keys)
    return h, faulty, keys


def _writes_in_a_clean_run(tmp_path: Path, api: FakeApi, results: ResultServer) -> int:
    h, faulty, keys = _scenario(tmp_path, api, results, None, _storage_error)
    assert {outcome(h, k) for k in keys} == {("result",)}
    return faulty.writes


@pytest.mark.parametrize("error", [_storage_error, _killed], ids=["storage-error", "process-killed"])
def test_a_failure_at_any_storage_write_still_gives_one_outcome_each(
    tmp_path: Path, api: FakeApi, results: ResultServer, error: Callable[[], BaseException]
) -> None:
    """Every write of one image and one (multi-chunk) video, failed in turn — as a storage error the
    code sees, or as the process dying there — then FC redelivers and the collector ticks."""
    total = _writes_in_a_clean_run(tmp_path, api, results)
    assert total >= 10
    problems: dict[int, Any] = {}
    for fail_at in range(1, total + 1):
        h, faulty, keys = _scenario(tmp_path, api, results, fail_at, error)
        assert faulty.failed, f"write {fail_at} was never reached"
        try:
            outcomes = assert_one_outcome_each(h, keys)
        except AssertionError as exc:
            problems[fail_at] = (faulty.failed, str(exc))
            continue
        if any(v != ("result",) for v in outcomes.values()):
            problems[fail_at] = (faulty.failed, outcomes)  # one transient fault must not cost a result
        video = next(k for k in keys if k.endswith(".mp4"))
        mask = f"{h.deps.layout.result_prefix(video, 'SegmentVideoBody')}mask.mp4"
        if h.storage.head(mask).size != len(BIG_VIDEO):
            problems[fail_at] = (faulty.failed, "partial mask stored")
        # A storage error after a paid call (result, manifest, record, pending entry) is retried in place,
        # so nothing is paid twice; a process dying there can only cost the redelivery one more call.
        paid = fetches_per_key(h, keys)
        if max(paid.values()) > (1 if error is _storage_error else 2):
            problems[fail_at] = (faulty.failed, paid)
    assert not problems, json.dumps(problems, indent=1, default=str)


def test_collector_killed_halfway_and_restarted_finishes_every_job_once(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    h = harness(tmp_path / "buckets", api, results)
    h.vision.job_statuses = []
    keys = upload(h, images=0, videos=12)
    assert h.on_upload(oss_event(*keys))["submitted"] == 12

    # From the 6th poll on the process is dead: every later poll and every storage write raises too.
    faulty = with_faulty_storage(h, None, _killed)
    poll = h.deps.vision.get_async_job_result
    polls = {"n": 0}
    lock = threading.Lock()

    def dying_poll(job_id: str, **kwargs: Any) -> Any:
        with lock:
            polls["n"] += 1
            if polls["n"] >= 6:
                if faulty.fail_at is None:
                    faulty.fail_at, faulty.sticky = faulty.writes + 1, True
                raise Killed("injected mid-run")
        return poll(job_id, **kwargs)

    h.deps.vision.get_async_job_result = dying_poll  # type: ignore[method-assign]
    with pytest.raises(Killed):
        h.collect()
    finished_before = sum(outcome(h, k) == ("result",) for k in keys)
    assert 0 < finished_before <= 5

    # Restarted: a new instance, healthy storage and client.
    faulty.fail_at, faulty.sticky = None, False
    h.deps.vision.get_async_job_result = poll  # type: ignore[method-assign]
    restarted = h.collect()
    assert (
        restarted["skipped"] >= 1
    )  # the dead run's leases still hold its jobs (and a publish lock its key) …
    h.clock.advance(max(h.settings.lease_seconds, h.deps.claim_seconds) + 1)
    h.collect()  # … until they expire

    outcomes = assert_one_outcome_each(h, keys)
    assert set(outcomes.values()) == {("result",)}
    assert all(len(h.results_for(k)) == 1 for k in keys)


def test_one_failing_lease_write_does_not_stop_the_tick_for_the_other_jobs(
    tmp_path: Path, api: FakeApi, results: ResultServer
) -> None:
    """One job's storage hiccup is that job's problem: the other jobs of the tick are still collected
    (services/collect.py: "one broken job must not stop the tick")."""
    h = harness(tmp_path / "buckets", api, results)
    h.vision.job_statuses = []
    keys = upload(h, images=0, videos=3)
    assert h.on_upload(oss_event(*keys))["submitted"] == 3
    faulty = with_faulty_storage(h, None, _storage_error, fail_on="put_bytes segflow-jobs/leases/")

    summary = h.collect()

    assert faulty.failed and faulty.failed[0].startswith("put_bytes segflow-jobs/leases/")
    assert summary["done"] == 2
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.collect()["done"] == 1
    assert set(assert_one_outcome_each(h, keys).values()) == {("result",)}


@pytest.mark.parametrize(
    "cleanup",
    ["delete segflow-jobs/inflight/", "delete segflow-failed/"],
    ids=["inflight-mark", "stale-failure-record"],
)
def test_a_failed_cleanup_after_the_result_is_stored_never_pays_for_it_again(
    tmp_path: Path, api: FakeApi, results: ResultServer, cleanup: str
) -> None:
    """The record is already `done` when on_upload deletes its inflight mark and any stale failure
    record; a storage error there must not turn it back into `submitting` (which makes FC's retry call
    the API again and rewrite the result)."""
    h = harness(tmp_path / "buckets", api, results)
    (key,) = upload(h, images=1, videos=0)
    # A failure record of an earlier version of the object: the result must replace it.
    stale = {
        "Bucket": h.storage.bucket,
        "Key": key,
        "Code": "InvalidImage.Content",
        "Action": "SegmentCommonImage",
    }
    FailureRecords(h.storage, h.deps.layout).write(stale)
    faulty = with_faulty_storage(h, None, _storage_error, fail_on=cleanup)

    run_to_completion(h, [key])

    assert faulty.failed and faulty.failed[0].startswith(cleanup)
    assert outcome(h, key) == ("result",)
    assert api.count("SegmentCommonImage") == 1
    assert fetches_per_key(h, [key]) == {key: 1}


def test_a_client_set_to_the_quota_never_exceeds_it_at_the_server(api: FakeApi) -> None:
    """SEGFLOW_QPS is the account's quota (e.g. 50): the service counts arrivals per second and answers
    Throttling.User above it, so no one-second window at the server may hold more than that."""
    from concurrent.futures import ThreadPoolExecutor

    from segflow.client import VisionClient
    from segflow.ratelimit import RateLimiter
    from tests.support.fake_api import TEST_CREDENTIALS
    from tests.support.services_harness import FAST_RETRY

    qps = 50
    client = VisionClient(
        TEST_CREDENTIALS, endpoints=api.endpoints(), rate_limiter=RateLimiter(qps), retry=FAST_RETRY
    )
    api.set_handler(lambda r: Reply.ok({"JobId": r.params.get("JobId"), "Status": "PROCESSING"}))
    with ThreadPoolExecutor(max_workers=12) as pool:
        list(pool.map(lambda i: client.get_async_job_result(f"job-{i}"), range(qps + 15)))
    assert api.max_requests_in_window(1.0) <= qps
