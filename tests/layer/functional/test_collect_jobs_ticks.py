"""collect_jobs driven with events/timer.json over loopback (issue 3, "collect_jobs" and "Done when").

GIVEN video jobs queued by on_upload against a fake videoseg that checks signatures, WHEN timer ticks run
(one after another, or overlapping), THEN each job is polled by one collector at a time, finished jobs
leave the pending listing, and every video ends with exactly one result or one failure record.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from segflow.errors import SegflowError
from segflow.services.collect import collect_finished_jobs
from segflow.states import RecordStates
from tests.conftest import load_event
from tests.support.fake_api import Reply
from tests.support.services_harness import (
    BUCKET,
    Harness,
    fc_context,
    jpeg,
    mp4,
    oss_event,
)

TIMER = json.dumps(load_event("timer.json")).encode()


def queue_videos(h: Harness, count: int) -> list[str]:
    keys = [f"incoming/videos/clip-{i:02d}.mp4" for i in range(count)]
    for key in keys:
        h.put(key, mp4())
    assert h.on_upload(oss_event(*keys))["submitted"] == count
    return keys


def outcome_files(h: Harness, key: str) -> tuple[list[str], dict[str, Any] | None]:
    return h.results_for(key), h.failure(key)


def test_video_event_is_queued_then_collected_by_the_timer(make: Any) -> None:
    h: Harness = make()
    event = load_event("oss-put-video.json")
    (key,) = h.stage(event)
    assert h.on_upload(event)["submitted"] == 1
    first = h.collect(payload=TIMER)
    assert (first["claimed"], first["pending"], first["done"]) == (1, 1, 0)  # PROCESSING
    second = h.collect(payload=TIMER)
    assert (second["claimed"], second["done"]) == (1, 1)
    prefix = f"segmented/{key}/SegmentVideoBody/"
    assert h.keys(prefix) == [prefix + "manifest.json", prefix + "mask.mp4"]
    assert h.storage.get_bytes(prefix + "mask.mp4") == h.storage.get_bytes(key)  # streamed intact
    manifest = h.manifest(key, "SegmentVideoBody")
    assert manifest["JobId"] and manifest["Source"]["ETag"] == h.storage.head(key).etag
    assert h.keys("segflow-jobs/pending/") == [] and h.keys("segflow-jobs/leases/") == []
    third = h.collect(payload=TIMER)
    assert third["claimed"] == 0
    assert all(r.signature_error is None for r in h.api.requests)


def test_two_overlapping_collectors_never_both_handle_a_job(make: Any) -> None:
    h: Harness = make(collect_concurrency=3)
    h.vision.job_statuses = []  # every job is finished at its first poll
    h.vision.poll_delay = 0.05  # so the two ticks really overlap
    keys = queue_videos(h, 12)
    summaries: list[dict[str, Any]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(2)

    def tick(owner: str) -> None:
        barrier.wait()
        summary = collect_finished_jobs(h.deps, None, buckets=[h.storage.bucket], owner=owner).to_dict()
        with lock:
            summaries.append(summary)

    threads = [threading.Thread(target=tick, args=(f"collector-{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(summaries) == 2
    assert sum(s["done"] for s in summaries) == 12
    # A tick that listed a job just before the other finished it may still claim it, then finds it gone.
    assert sum(s["claimed"] - s["gone"] for s in summaries) == 12
    assert all(s["claimed"] > 0 for s in summaries)  # both worked, on different jobs
    polls = [r.params["JobId"] for r in h.api.requests_for("GetAsyncJobResult")]
    assert len(polls) == len(set(polls)) == 12  # no job was polled twice
    assert all(count == 1 for count in h.results.downloads.values())  # no result copied twice
    for key in keys:
        assert outcome_files(h, key) == ([f"segmented/{key}/SegmentVideoBody/manifest.json"], None)


def test_process_failed_job_ends_as_a_failure_record(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = ["PROCESS_FAILED"]
    (key,) = queue_videos(h, 1)
    assert h.collect(payload=TIMER)["failed"] == 1
    failure = h.failure(key)
    assert failure is not None
    assert (failure["Code"], failure["Action"]) == ("InvalidFile.Content", "SegmentVideoBody")
    assert failure["JobId"] and h.results_for(key) == []
    assert h.keys("segflow-jobs/pending/") == []


def test_timeout_failed_job_ends_as_a_failure_record(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = ["TIMEOUT_FAILED"]
    (key,) = queue_videos(h, 1)
    h.collect(payload=TIMER)
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "TIMEOUT_FAILED"


def test_limit_retry_failed_is_resubmitted_a_bounded_number_of_times(make: Any) -> None:
    h: Harness = make(max_resubmits=2)
    h.vision.job_statuses = ["LIMIT_RETRY_FAILED"]  # every (re)submitted job hits the limit once
    (key,) = queue_videos(h, 1)
    assert h.collect(payload=TIMER)["resubmitted"] == 1
    assert h.collect(payload=TIMER)["resubmitted"] == 1
    assert h.collect(payload=TIMER)["failed"] == 1
    assert h.api.count("SegmentVideoBody") == 3  # the first submission and two resubmissions
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "LIMIT_RETRY_FAILED"


def test_resubmitted_job_that_then_succeeds_is_stored(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = ["LIMIT_RETRY_FAILED"]
    (key,) = queue_videos(h, 1)
    h.vision.job_statuses = []
    assert h.collect(payload=TIMER)["resubmitted"] == 1
    assert h.collect(payload=TIMER)["done"] == 1
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentVideoBody/manifest.json"], None)


def test_expired_result_url_is_asked_for_again_once(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    h.vision.expire_results = 1
    (key,) = queue_videos(h, 1)
    assert h.collect(payload=TIMER)["done"] == 1
    assert h.api.count("GetAsyncJobResult") == 2
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentVideoBody/manifest.json"], None)


def test_result_url_expired_twice_fails_clearly(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    h.vision.expire_results = 2
    (key,) = queue_videos(h, 1)
    assert h.collect(payload=TIMER)["failed"] == 1
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "ResultExpired"
    assert "403" in failure["Message"] and h.api.count("GetAsyncJobResult") == 2


def test_collector_stops_claiming_when_the_invocation_is_about_to_time_out(make: Any) -> None:
    h: Harness = make()
    queue_videos(h, 3)
    # FC's context gives the function timeout; the handler's deadline is counted from it at entry.
    short = int(h.deps.collect_stop_seconds) - 1
    summary = h.collect(fc_context("segflow-collect-jobs", timeout=short), payload=TIMER)
    assert (summary["claimed"], summary["stopped_early"]) == (0, True)
    assert h.api.count("GetAsyncJobResult") == 0
    assert len(h.keys("segflow-jobs/pending/")) == 3


def test_lease_of_a_crashed_collector_is_reclaimed_after_it_expires(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    (key,) = queue_videos(h, 1)
    queue = h.deps.queue(h.storage)
    (record_id,) = queue.ids()
    assert queue.try_lease(record_id, "crashed-collector") is not None
    held = h.collect(payload=TIMER)
    assert (held["claimed"], held["skipped"]) == (0, 1)
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.collect(payload=TIMER)["done"] == 1
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentVideoBody/manifest.json"], None)


def test_polling_storm_of_429_and_5xx_loses_no_job(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    keys = queue_videos(h, 5)
    storm = [Reply.error(429, "Throttling.User"), Reply.error(500, "InternalServerError.Busy")] * 6
    h.api.queue("GetAsyncJobResult", *storm)
    h.results.fail_next(3, 502)
    for _ in range(10):
        h.collect(payload=TIMER)
        if not h.keys("segflow-jobs/pending/"):
            break
    assert h.keys("segflow-jobs/pending/") == []
    for key in keys:
        assert outcome_files(h, key) == ([f"segmented/{key}/SegmentVideoBody/manifest.json"], None)


def test_pending_listing_holds_only_unfinished_jobs(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    queue_videos(h, 3)
    h.vision.job_statuses = ["PROCESSING"] * 5
    queue_videos_more = [f"incoming/videos/slow-{i}.mp4" for i in range(2)]
    for key in queue_videos_more:
        h.put(key, mp4())
    h.on_upload(oss_event(*queue_videos_more))
    summary = h.collect(payload=TIMER)
    assert (summary["done"], summary["pending"]) == (3, 2)
    assert len(h.keys("segflow-jobs/pending/")) == 2
    assert h.collect(payload=TIMER)["claimed"] == 2


@pytest.mark.parametrize("payload", [b"", b"{not json", b'"awesome-fc"', b'{"payload": "awesome-fc"}'])
def test_timer_without_a_bucket_list_collects_the_configured_buckets(make: Any, payload: bytes) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    (key,) = queue_videos(h, 1)
    assert h.collect(payload=payload)["done"] == 1
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentVideoBody/manifest.json"], None)


def test_timer_payload_names_the_buckets_to_scan(make: Any) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    queue_videos(h, 1)
    other = json.dumps({"triggerName": "every-minute", "payload": json.dumps({"buckets": ["other-bucket"]})})
    assert h.collect(payload=other.encode())["claimed"] == 0
    mine = json.dumps({"triggerName": "every-minute", "payload": json.dumps({"buckets": ["segflow-demo"]})})
    assert h.collect(payload=mine.encode())["done"] == 1


def test_upload_whose_instance_died_after_fc_stopped_retrying_is_redriven(make: Any) -> None:
    h: Harness = make()
    key = "incoming/photos/orphan.jpg"
    h.put(key, jpeg())
    store = h.deps.records(h.storage)
    etag = h.storage.head(key).etag
    store.begin(BUCKET, key, etag, "SegmentCommonImage", region="cn-shanghai")  # and then it died
    assert h.collect(payload=TIMER)["redriven"] == 0  # its claim still holds
    h.clock.advance(h.deps.claim_seconds + 1)
    assert h.collect(payload=TIMER)["redriven"] == 1
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentCommonImage/manifest.json"], None)
    assert h.keys("segflow-jobs/inflight/") == []
    assert h.collect(payload=TIMER)["redriven"] == 0


def test_upload_released_after_a_retryable_error_is_redriven_when_no_retry_comes(make: Any) -> None:
    h: Harness = make()
    key = "incoming/photos/throttled.jpg"
    h.put(key, jpeg())
    h.api.queue("SegmentCommonImage", *[Reply.error(429, "Throttling.User")] * 4)
    with pytest.raises(SegflowError):
        h.on_upload(oss_event(key))  # FC configured with no async retries: nothing redelivers
    assert h.collect(payload=TIMER)["redriven"] == 0  # FC's retry gets stall_seconds to come first
    h.clock.advance(h.deps.stall_seconds + 1)
    assert h.collect(payload=TIMER)["redriven"] == 1
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentCommonImage/manifest.json"], None)
    assert h.api.count("SegmentCommonImage") == 5


def test_concurrent_polls_stay_under_the_shared_rate_limit(make: Any) -> None:
    """Throttling.User: the account allows 2 QPS by default (VISION-API.md §1); every worker shares one
    bucket."""
    h: Harness = make(collect_concurrency=4, client_qps=10.0)
    h.vision.job_statuses = []
    queue_videos(h, 8)
    h.api.clear()
    assert h.collect(payload=TIMER)["done"] == 8
    assert h.api.count("GetAsyncJobResult") == 8
    assert h.api.max_requests_in_window(1.0) <= 11


def test_results_are_streamed_into_storage_in_bounded_chunks(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    (key,) = queue_videos(h, 1)
    big = bytes(range(256)) * (24 * 1024 * 1024 // 256)  # a 24 MiB "mask video"
    h.vision.jobs[next(iter(h.vision.jobs))].input_bytes = big
    storage = h.storage
    seen: list[int] = []
    real_put_stream = storage.put_stream

    def recording_put_stream(dest: str, chunks: Any, **kwargs: Any) -> str:
        assert not isinstance(chunks, bytes | bytearray | list)  # an iterator, not a buffer

        def counted() -> Iterator[bytes]:
            for chunk in chunks:
                seen.append(len(chunk))
                yield chunk

        return real_put_stream(dest, counted(), **kwargs)

    monkeypatch.setattr(storage, "put_stream", recording_put_stream)
    assert h.collect(payload=TIMER)["done"] == 1
    assert sum(seen) == len(big) and len(seen) >= 24 and max(seen) <= 1024 * 1024
    assert h.storage.head(f"segmented/{key}/SegmentVideoBody/mask.mp4").size == len(big)


def test_failed_job_with_a_server_error_code_is_final_not_polled_forever(make: Any) -> None:
    h: Harness = make()
    (key,) = queue_videos(h, 1)
    (job,) = h.vision.jobs.values()
    job.statuses = ["PROCESS_FAILED"]
    h.api.queue(
        "GetAsyncJobResult",
        Reply.ok(
            {
                "JobId": job.job_id,
                "Status": "PROCESS_FAILED",
                "ErrorCode": "InternalServerError.Algo",
                "ErrorMessage": "model crashed",
            }
        ),
    )
    assert h.collect(payload=TIMER)["failed"] == 1
    failure = h.failure(key)
    assert failure is not None and failure["Code"] == "InternalServerError.Algo"
    assert h.keys("segflow-jobs/pending/") == []


@pytest.mark.parametrize(
    "reply",
    [
        Reply.error(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."),
        Reply.error(403, "Forbidden.RAM", "no permission"),
        Reply.error(400, "SignatureDoesNotMatch", "bad signature"),
    ],
)
def test_credential_or_permission_errors_leave_jobs_pending_for_the_fixed_deployment(
    make: Any, reply: Reply
) -> None:
    h: Harness = make()
    h.vision.job_statuses = []
    (key,) = queue_videos(h, 1)
    h.api.queue("GetAsyncJobResult", reply)
    summary = h.collect(payload=TIMER)
    assert (summary["errors"], summary["failed"]) == (1, 0)
    assert h.failure(key) is None and len(h.keys("segflow-jobs/pending/")) == 1
    assert h.collect(payload=TIMER)["done"] == 1  # the deployment was fixed


def test_a_reopened_record_of_an_action_the_object_no_longer_routes_to_is_closed_by_one_redrive(
    make: Any,
) -> None:
    """`segflow redrive` reopens the record of the action an object failed in. When a rule was changed
    since, the object now goes to another action and the old record would stay `submitting`: every tick
    would send the object again, as a duplicate. One redrive closes it (RouteChanged); the new action's
    result stays and nothing more is paid."""
    h: Harness = make()
    key = "incoming/photos/rerouted.jpg"
    h.put(key, jpeg())
    store = h.deps.records(h.storage)
    etag = h.storage.head(key).etag
    old = store.begin(BUCKET, key, etag, "SegmentBody", region="cn-shanghai").record  # the old rule's action
    assert old is not None
    store.mark_failed(old, {"Code": "InvalidImage.Content"})
    assert store.reopen(old.record_id) is not None  # what redrive does, after the rule was changed
    assert h.on_upload(oss_event(key))["done"] == 1  # images go to SegmentCommonImage now
    h.clock.advance(max(h.deps.stall_seconds, h.deps.claim_seconds) + 1)
    assert h.collect(payload=TIMER)["redriven"] == 1
    closed = store.load(old.record_id)
    assert closed is not None and closed.state == RecordStates.FAILED
    assert closed.payload.error is not None and closed.payload.error["Code"] == "RouteChanged"
    assert h.keys("segflow-jobs/inflight/") == []
    assert h.collect(payload=TIMER)["redriven"] == 0
    assert h.api.count("SegmentCommonImage") == 1 and h.api.count("SegmentBody") == 0
    assert outcome_files(h, key) == ([f"segmented/{key}/SegmentCommonImage/manifest.json"], None)
