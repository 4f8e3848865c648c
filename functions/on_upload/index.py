"""OSS trigger: segment every uploaded object (the work is in `segflow.services.upload`)."""

from __future__ import annotations

import os
from typing import Any

from segflow.deadline import Deadline
from segflow.services.deps import handler_deps
from segflow.services.upload import process_upload_event


def handler(event: bytes, context: Any) -> str:
    deadline = Deadline.from_context(context)  # FC gives function.timeout, not a remaining-time method
    deps = handler_deps(context, os.environ)
    return process_upload_event(event, deps, deadline).to_json()
