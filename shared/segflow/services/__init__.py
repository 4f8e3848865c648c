"""The two functions' work, behind plain-argument services the thin handlers call.

`process_upload_event(event, deps, deadline)` (on_upload: `services.upload` over `locate`, `pairs` and the
paid call's owner, `paid`) and `collect_tick(event, deps, deadline)` (collect_jobs: `services.collect` and
`collect_job`) receive every collaborator in a `Deps`, so tests hand in local storage, a loopback API and a
fake clock, and nothing here reads the environment. Every outcome is written by `services.publish`.
"""

from __future__ import annotations
