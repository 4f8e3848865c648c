"""`segflow invoke`'s presigned URLs outlive it: the README's two-terminal workflow finishes every job.

GIVEN the engine running in one terminal (here: in this process, on loopback) and a bucket directory
WHEN `segflow invoke on_upload` (the real command, a child process that exits) submits video events one
     by one, and the engine's workers fetch the queued inputs after every invoke has exited,
THEN `segflow invoke collect_jobs` ends each clip with a result, and no input download fails.

The URLs are served by the bucket directory's background server (`segflow_cli.urlserver`): started by the
first invoke that signs one, reused by the next, stopped by the test at the end (by itself, 60 s after
the last URL expires, for a user). SegmentVideoBody, like the videoseg service, fetches its input URL
when the job runs, not when it is submitted (videoseg docs, "asynchronous jobs": the call returns a
JobId at once and the job is queued).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from segflow_cli.urlserver import read_state, server_alive, state_dir_of, stop_background_server
from tests.conftest import EVENTS_DIR, REPO_ROOT, SOURCE_ROOTS
from tests.support.engine_server import RunningEngine, StubActions, start_engine

BUCKET = "segflow-demo"  # the bucket of events/oss-put-video.json
COLLECT_SECONDS = 300.0


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A bucket directory; its background URL server, if any, is stopped after the test."""
    directory = tmp_path / "buckets"
    (directory / BUCKET).mkdir(parents=True)
    yield directory
    stop_background_server(directory)
    assert not server_alive(state_dir_of(directory))


def video_event(key: str, data: bytes) -> dict[str, Any]:
    """events/oss-put-video.json with this object's key, size and ETag, as OSS would send it."""
    import hashlib

    event: dict[str, Any] = json.loads((EVENTS_DIR / "oss-put-video.json").read_text(encoding="utf-8"))
    obj = event["events"][0]["oss"]["object"]
    obj.update(key=key, size=len(data), deltaSize=len(data), eTag=hashlib.md5(data).hexdigest().upper())
    return event


def cli_env(engine: RunningEngine) -> dict[str, str]:
    """The README's second terminal: the engine's endpoint and dev key pair in the environment, and the
    `presign` input path, whose local URLs must outlive `invoke` (the default `upload` path copies the
    input into the engine before the call, so it needs none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "SEGFLOW_"))}
    paths = [*map(str, SOURCE_ROOTS), str(REPO_ROOT)]
    env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    env.update(
        SEGFLOW_IMAGESEG_ENDPOINT=engine.base_url,
        SEGFLOW_VIDEOSEG_ENDPOINT=engine.base_url,
        SEGFLOW_INPUT_URL="presign",
        ALIBABA_CLOUD_ACCESS_KEY_ID=engine.access_key_id,
        ALIBABA_CLOUD_ACCESS_KEY_SECRET=engine.access_key_secret,
    )
    return env


def invoke(env: dict[str, str], root: Path, function: str, event: Path) -> dict[str, Any]:
    """`segflow invoke <function> <event> --bucket-dir <root>` as a child process that exits."""
    command = [sys.executable, "-m", "segflow_cli", "invoke", function, str(event), "--bucket-dir", str(root)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def submit_clips(env: dict[str, str], root: Path, clips: dict[str, bytes], tmp_path: Path) -> None:
    for n, (key, data) in enumerate(clips.items()):
        path = root / BUCKET / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        event_file = tmp_path / f"event-{n}.json"
        event_file.write_text(json.dumps(video_event(key, data)), encoding="utf-8")
        summary = invoke(env, root, "on_upload", event_file)
        assert summary["submitted"] == 1, summary


def collect_until_done(env: dict[str, str], root: Path, keys: list[str]) -> dict[str, str]:
    """Run the timer's collect_jobs until every key has a manifest or a failure record (bounded)."""
    bucket = root / BUCKET
    outcomes: dict[str, str] = {}
    deadline = time.monotonic() + COLLECT_SECONDS
    while len(outcomes) < len(keys) and time.monotonic() < deadline:
        invoke(env, root, "collect_jobs", EVENTS_DIR / "timer.json")
        for key in keys:
            failure = bucket / "segflow-failed" / f"{key}.json"
            if failure.is_file():
                outcomes[key] = json.loads(failure.read_text(encoding="utf-8")).get("Code", "failed")
            elif list((bucket / "segmented" / key).glob("*/manifest.json")):
                outcomes[key] = "done"
        time.sleep(1.0)
    return outcomes


def grey_clips(count: int) -> dict[str, bytes]:
    from tests.support.engine_server import make_mp4

    return {f"incoming/videos/clip-{n:02d}.mp4": make_mp4(96, 64, frames=4 + n) for n in range(count)}


def test_queued_jobs_fetch_their_input_after_invoke_exited(root: Path, tmp_path: Path) -> None:
    """No models: the engine's only worker is held, so every job but the first is still queued (its input
    not fetched) when the last invoke exits; then the worker is let go."""
    actions = StubActions()
    gate = actions.hold()
    clips = grey_clips(4)
    with start_engine(actions=actions, workers=1) as engine:
        env = cli_env(engine)
        submit_clips(env, root, clips, tmp_path)
        assert len(actions.calls) <= 1  # the others wait in the queue, their URLs not fetched yet
        first, _ = read_state(state_dir_of(root))
        gate.set()
        outcomes = collect_until_done(env, root, list(clips))
    assert outcomes == dict.fromkeys(clips, "done")
    assert len(actions.calls) == len(clips)
    last, _ = read_state(state_dir_of(root))
    assert first is not None and last is not None and server_alive(state_dir_of(root))
    assert last.pid == first.pid  # every invoke used the one server


@pytest.mark.engine
@pytest.mark.slow
def test_ten_clips_through_the_readme_workflow_all_end_with_a_result(root: Path, tmp_path: Path) -> None:
    """The real SegmentVideoBody on 10 person clips, two workers: most jobs run after invoke exited."""
    from tests.support import composites

    clips: dict[str, bytes] = {}
    for n in range(10):
        path = tmp_path / f"clip-{n}.mp4"
        composites.write_video(path, (f.image for f in composites.person_clip_frames(6 + n)))
        clips[f"incoming/videos/person-{n:02d}.mp4"] = path.read_bytes()
    with start_engine(workers=2) as engine:
        env = cli_env(engine)
        submit_clips(env, root, clips, tmp_path)
        outcomes = collect_until_done(env, root, list(clips))
    assert outcomes == dict.fromkeys(clips, "done"), outcomes
    for key in clips:
        manifest_path = next((root / BUCKET / "segmented" / key).glob("*/manifest.json"))
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        assert manifest["Action"] == "SegmentVideoBody"
        assert any(f.get("Role") == "video" for f in manifest["Files"])
