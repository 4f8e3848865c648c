"""Injected 429/5xx storms lose nothing, and our own outputs are never reprocessed (issue 3, "Done when").

GIVEN a batch of images and videos and a fake service that answers a bounded storm of throttling and
server errors (more than one call's retries can absorb), WHEN FC delivers the event again after every
raised invocation (as its async retry does) and the timer collects, THEN each object ends with exactly one
result or exactly one failure record, and re-delivering events for everything written under the output,
jobs and failure prefixes calls nothing and writes nothing.
"""

from __future__ import annotations

import json

import pytest

from segflow.errors import SegflowError
from tests.conftest import load_event
from tests.support.fake_api import Reply
from tests.support.services_harness import Harness, jpeg, mp4, oss_event

TIMER = json.dumps(load_event("timer.json")).encode()


def deliver_like_fc(h: Harness, event: dict[str, object]) -> int:
    """The first invocation plus FC's async retries (3 by default) while the handler raises."""
    for attempt in range(1, h.deps.max_event_attempts + 1):
        try:
            h.on_upload(event)
            return attempt
        except SegflowError:
            continue
    return h.deps.max_event_attempts


@pytest.mark.parametrize("storm_size", [6, 40])
def test_storm_of_throttling_and_server_errors_loses_no_object(h: Harness, storm_size: int) -> None:
    images = [f"incoming/photos/p-{i:02d}.jpg" for i in range(8)]
    videos = [f"incoming/videos/v-{i}.mp4" for i in range(2)]
    for key in images:
        h.put(key, jpeg((200, 150)))
    for key in videos:
        h.put(key, mp4())
    h.vision.job_statuses = ["QUEUING", "PROCESSING"]
    kinds = [
        Reply.error(429, "Throttling.User"),
        Reply.error(500, "InternalError"),
        Reply.error(503, "ServiceUnavailable"),
        Reply.connection_reset(),
    ]
    h.api.queue("*", *[kinds[i % len(kinds)] for i in range(storm_size)])
    h.results.fail_next(2, 503)
    event = oss_event(*images, *videos)
    deliver_like_fc(h, event)
    for _ in range(20):
        if not h.keys("segflow-jobs/pending/"):
            break
        h.collect(payload=TIMER)
    assert h.keys("segflow-jobs/pending/") == []
    for key in [*images, *videos]:
        manifests, failure = h.results_for(key), h.failure(key)
        assert (len(manifests), failure is not None) in ((1, False), (0, True)), key
    # A storm this size is absorbed by retries: the small one entirely inside calls, the large one
    # partly through FC's redelivery; either way nothing is marked failed for a transient error.
    assert all(h.failure(key) is None for key in [*images, *videos])
    submissions = [r for r in h.api.requests if r.action in ("SegmentCommonImage", "SegmentVideoBody")]
    accepted = {r.params.get("ImageURL") or r.params.get("VideoUrl") for r in submissions}
    assert len(accepted) >= len(images) + len(videos)


def test_a_permanent_error_in_a_storm_fails_only_its_own_object(h: Harness) -> None:
    keys = [f"incoming/photos/q-{i}.jpg" for i in range(4)]
    for key in keys:
        h.put(key, jpeg((200, 150)))
    h.api.queue(
        "SegmentCommonImage",
        Reply.error(429, "Throttling.User"),
        Reply.error(400, "InvalidImage.Content", "refused"),
        Reply.error(500, "InternalError"),
    )
    deliver_like_fc(h, oss_event(*keys))
    failed = [key for key in keys if h.failure(key) is not None]
    assert len(failed) == 1
    assert [key for key in keys if h.results_for(key)] == [key for key in keys if key not in failed]


def test_nothing_written_by_segflow_is_ever_processed_again(h: Harness) -> None:
    event = load_event("oss-multi-records.json")
    h.stage(event)
    h.api.queue("SegmentCommonImage", Reply.error(400, "InvalidImage.Content"))  # one failure record too
    h.on_upload(event)
    while h.keys("segflow-jobs/pending/"):
        h.collect(payload=TIMER)
    ours = [k for k in h.keys("") if h.deps.layout.is_own(k)]
    assert any(k.startswith("segmented/") for k in ours)
    assert any(k.startswith("segflow-failed/") for k in ours)
    assert any(k.startswith("segflow-jobs/") for k in ours)
    before_requests, before_keys = len(h.api.requests), h.keys()
    summary = h.on_upload(oss_event(*ours))
    assert summary["skipped"] == len(ours) and summary["done"] == summary["failed"] == 0
    assert len(h.api.requests) == before_requests
    assert h.keys() == before_keys
