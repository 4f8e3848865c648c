"""The two functions' work, behind plain-argument services the thin handlers call.

`process_upload_event(event, deps, deadline)` (on_upload, `services.upload` over the steps of
`services.attempt`) and `collect_tick(event, deps, deadline)` (collect_jobs, `services.collect`) receive
every collaborator in a `Deps`, so tests hand in local storage, a loopback API and a fake clock, and
nothing here reads the environment.
"""

from __future__ import annotations
