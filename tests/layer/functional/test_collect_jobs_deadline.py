"""collect_jobs finishes before FC's timeout, from what FC's context really holds.

FC docs, Python runtime, "context": the handler gets `context.function.timeout` (seconds) and no
remaining-time method (that is AWS Lambda's `get_remaining_time_in_millis`). FC stops an invocation at its
timeout whatever it is doing, so the collector takes its deadline at entry and must return before it:
no new claim once `collect_stop_seconds` remain, and a result copy still running `copy_margin_seconds`
before the end is abandoned (nothing half-written, the job stays pending for the next tick).

The context here is `segflow_cli.fccontext.FcContext`: exactly FC's documented attributes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import load_event
from tests.support.services_harness import Harness, fc_context, mp4, oss_event

TIMER = json.dumps(load_event("timer.json")).encode()
FUNCTION_TIMEOUT = 20  # seconds, as `timeout:` in s.yaml would say
POLL_SECONDS = 3.0  # every GetAsyncJobResult of the slow service takes this long
BIG_RESULT = 8 * 1024 * 1024  # the mask video each job returns
SLOW_LINK = 512 * 1024  # bytes per second of the one slow result download: 16 s for BIG_RESULT


def queue_videos(h: Harness, count: int) -> list[str]:
    keys = [f"incoming/backlog/clip-{i:02d}.mp4" for i in range(count)]
    for key in keys:
        h.put(key, mp4())
    assert h.on_upload(oss_event(*keys))["submitted"] == count
    return keys


def timed_tick(h: Harness) -> tuple[float, dict[str, Any]]:
    context = fc_context("segflow-collect-jobs", timeout=FUNCTION_TIMEOUT)
    started = time.monotonic()
    summary = h.collect(context, payload=TIMER)
    return time.monotonic() - started, summary


@pytest.mark.slow
def test_a_busy_tick_returns_before_the_function_timeout_and_the_next_tick_finishes(make: Any) -> None:
    """GIVEN 12 finished video jobs behind a slow service (3 s per poll, 4 at a time) and one result that
    trickles in over 16 s, WHEN a tick runs with a 20 s function timeout, THEN it returns with time to
    spare, leaves the rest pending with no lease held and nothing half-stored, and the next tick
    finishes every job."""
    h: Harness = make(collect_concurrency=4)
    assert (h.deps.collect_stop_seconds, h.deps.copy_margin_seconds) == (15.0, 5.0)
    h.vision.job_statuses = []  # each job is done at its first poll
    h.vision.poll_delay = POLL_SECONDS
    h.vision.video_result = bytes(range(256)) * (BIG_RESULT // 256)
    keys = queue_videos(h, 12)
    h.results.throttle_next(1, SLOW_LINK)

    elapsed, first = timed_tick(h)

    assert elapsed < FUNCTION_TIMEOUT - 2, f"the tick ran {elapsed:.1f} s of its {FUNCTION_TIMEOUT} s"
    assert first["stopped_early"] is True
    # 4 claimed at once, 3 more when the fast copies freed their slots, then no claim below 15 s left;
    # the slow copy was abandoned 5 s before the end.
    assert (first["claimed"], first["done"], first["pending"], first["failed"]) == (7, 6, 1, 0)
    done = [key for key in keys if h.results_for(key)]
    waiting = [key for key in keys if not h.results_for(key)]
    assert len(done) == 6 and len(waiting) == 6
    for key in waiting:  # nothing half-written for the abandoned copy (or the unclaimed jobs)
        assert h.keys(f"segmented/{key}/") == [] and h.failure(key) is None
    queue = h.deps.queue(h.storage)
    pending = sorted(queue.ids())
    assert len(pending) == 6
    for record_id in pending:  # every lease is released (or was never taken): claimable right now
        lease = queue.try_lease(record_id, "probe")
        assert lease is not None
        queue.release_lease(lease)

    elapsed_again, second = timed_tick(h)

    assert (second["claimed"], second["done"], second["skipped"], second["stopped_early"]) == (6, 6, 0, False)
    assert elapsed_again < FUNCTION_TIMEOUT - 2
    assert all(len(h.results_for(key)) == 1 for key in keys)
    assert list(queue.ids()) == [] and h.keys("segflow-jobs/leases/") == []
    for key in keys:
        prefix = f"segmented/{key}/SegmentVideoBody/"
        assert h.storage.head(prefix + "mask.mp4").size == BIG_RESULT


def test_a_context_without_a_function_timeout_means_no_deadline(make: Any) -> None:
    """A context that is not FC's (no `function.timeout`) gives no deadline: the tick claims everything."""
    h: Harness = make()
    h.vision.job_statuses = []
    queue_videos(h, 2)

    class NotFc:
        request_id = "local"

    summary = h.collect(NotFc(), payload=TIMER)
    assert (summary["claimed"], summary["done"], summary["stopped_early"]) == (2, 2, False)
