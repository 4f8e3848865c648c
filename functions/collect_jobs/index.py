"""Timer trigger: finish the asynchronous jobs on_upload queued (`segflow.services.collect`)."""

from __future__ import annotations

import os
from typing import Any

from segflow.deadline import Deadline
from segflow.services.collect import collect_tick
from segflow.services.deps import handler_deps


def handler(event: bytes, context: Any) -> str:
    deadline = Deadline.from_context(context)  # FC gives function.timeout, not a remaining-time method
    deps = handler_deps(context, os.environ)
    return collect_tick(event, deps, deadline).to_json()
