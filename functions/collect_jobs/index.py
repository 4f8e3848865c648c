"""Timer trigger: finish the asynchronous jobs on_upload queued (`segflow.services.collect`)."""

from __future__ import annotations

import os
from typing import Any

from segflow.services.collect import collect_tick
from segflow.services.deps import handler_deps


def handler(event: bytes, context: Any) -> dict[str, Any]:
    deps = handler_deps(context, os.environ)
    remaining_ms = getattr(context, "get_remaining_time_in_millis", None)
    return collect_tick(event, deps, remaining_ms).to_dict()
