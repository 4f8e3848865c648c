"""Timer trigger: finish the asynchronous jobs on_upload queued (`segflow.services.collect`)."""

from __future__ import annotations

import os
from typing import Any

from segflow.events import TimerEvent
from segflow.services.collect import buckets_to_collect, collect_finished_jobs
from segflow.services.deps import handler_deps


def handler(event: bytes, context: Any) -> dict[str, Any]:
    deps = handler_deps(context, os.environ)
    timer = TimerEvent.from_payload(event)
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    summary = collect_finished_jobs(deps, remaining_ms, buckets=buckets_to_collect(deps, timer))
    return summary.to_dict()
