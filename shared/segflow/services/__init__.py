"""The two functions' work, behind plain-argument services the thin handlers call.

`process_upload_event(event, deps)` (on_upload) and `collect_finished_jobs(deps, remaining_ms)`
(collect_jobs) receive every collaborator in a `Deps`, so tests hand in local storage, a loopback API and
a fake clock, and nothing here reads the environment.
"""

from __future__ import annotations
