"""The two functions' work: `process_upload_event` (on_upload) and `collect_tick` (collect_jobs), with every
collaborator in a `Deps`, so tests hand in local storage, a loopback API and a fake clock, and nothing here
reads the environment.
"""

from __future__ import annotations
